"""The repository passes ruff with the configuration in pyproject.toml ([tool.ruff])."""
import importlib.util
import subprocess
import sys

import pytest

from autograder import REPO_ROOT


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed in this environment (make setup installs it; or pip install ruff)")
def test_ruff_check_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, \
        f"ruff check . found problems (exit {r.returncode}):\n{r.stdout[-6000:]}{r.stderr[-2000:]}"
