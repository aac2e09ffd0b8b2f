"""python -m autograder bench ASSIGNMENT: speed tables and plots (ungraded; graded speed is in the suites)."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from .. import config
from ..impl import ENV_VAR


def main(assignment: str, impl_root: Path, out: Path) -> int:
    try:
        mod = importlib.import_module(f"{__name__}.{assignment}")
    except ModuleNotFoundError:
        have = [n for n in config.assignments() if importlib.util.find_spec(f"{__name__}.{n}")]
        print(f"no benchmark for {assignment!r}; available: {', '.join(have)}", file=sys.stderr)
        return 2
    os.environ[ENV_VAR] = str(impl_root)
    out.mkdir(parents=True, exist_ok=True)
    return mod.run(out) or 0
