"""Fixtures for the tooling's own tests: submissions built from the reference with one change."""
from __future__ import annotations

from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.impl import copy_tree


def make_submission(tmp_path: Path, patches: dict[str, list[tuple[str, str]]]) -> Path:
    """Copy solutions/ and apply (old, new) text replacements per file ('kv_cache/kv_cache.py')."""
    root = tmp_path / "submission"
    copy_tree(REPO_ROOT / "solutions", root)
    for rel, edits in patches.items():
        f = root / rel
        text = f.read_text()
        for old, new in edits:
            assert old in text, f"fixture patch does not apply to {rel}: {old!r}"
            text = text.replace(old, new, 1)
        f.write_text(text)
    return root


@pytest.fixture
def submission(tmp_path):
    return lambda patches: make_submission(tmp_path, patches)
