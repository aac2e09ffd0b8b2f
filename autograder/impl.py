"""The one resolver that says which code a graded suite tests.

`--impl assignments` (the student's work, default), `--impl solutions` (the reference), or
`--impl PATH` (a folder or .zip with the same layout: one package per assignment, e.g.
`kv_cache/`). The grader puts the resolved folder in AUTOGRADER_IMPL; graded tests call
`load("kv_cache")` and never learn where the code came from.

In a graded suite (AUTOGRADER_MODE=worker) `load` imports nothing here: it returns a proxy of
the module as imported by the test's sandboxed worker (autograder/remote/). Elsewhere (the
tooling's tests, the benches, the legacy in-process tiers) it imports the module in this process.

Assignment packages import each other by their top-level names (the engine imports
`kv_cache.model`), so the resolved folder goes first on sys.path.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

from . import REPO_ROOT

ENV_VAR = "AUTOGRADER_IMPL"
MODE_ENV = "AUTOGRADER_MODE"   # "worker": submission code runs only in the sandboxed worker


class ImplementationError(Exception):
    """The code under test could not be imported. The message says which file and why."""


def resolve(spec: str | os.PathLike | None) -> Path:
    """Turn an --impl value into a folder that holds assignment packages."""
    spec = str(spec or "assignments")
    if spec in ("assignments", "solutions"):
        return REPO_ROOT / spec
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"--impl {spec}: no such folder or zip")
    if path.is_file() and path.suffix == ".zip":
        path = _unzip(path)
    if not path.is_dir():
        raise NotADirectoryError(f"--impl {spec}: expected a folder or a .zip of one")
    return _descend(path)


def _unzip(path: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="autograder-submission-"))
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():  # refuse paths that escape the folder
            target = (dest / member).resolve()
            if not str(target).startswith(str(dest.resolve())):
                raise ValueError(f"{path}: zip member {member!r} escapes the folder")
        zf.extractall(dest)
    return dest


def _descend(path: Path) -> Path:
    """A submission zipped as `assignments/kv_cache/...` or `mywork/kv_cache/...` works too."""
    from .config import assignments

    names = set(assignments())
    for _ in range(3):
        if any((path / n).is_dir() for n in names):
            return path
        if (path / "assignments").is_dir():
            path = path / "assignments"
            continue
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
        if len(subdirs) != 1:
            break
        path = subdirs[0]
    return path


def root() -> Path:
    """The folder under test, as the grader set it (the student's assignments/ by default)."""
    return Path(os.environ.get(ENV_VAR) or REPO_ROOT / "assignments")


def load(assignment: str, module: str | None = None):
    """Import `assignment` (or `assignment.module`) from the code under test.

    Raises ImplementationError with the failing file and line when the student's code does
    not import (syntax error, missing name, an import that fails), so each test reports it.
    """
    base = root()
    if not (base / assignment).is_dir():
        raise ImplementationError(f"no folder {assignment}/ in {base}: the submission must keep the assignments/ layout")
    name = assignment if module is None else f"{assignment}.{module}"
    if os.environ.get(MODE_ENV) == "worker":
        return _load_remote(name)
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure of student code is reported, not raised raw
        frames = [f for f in traceback.extract_tb(e.__traceback__) if str(base) in f.filename]
        where = f" ({Path(frames[-1].filename).relative_to(base)}:{frames[-1].lineno})" if frames else ""
        if isinstance(e, SyntaxError) and e.filename:
            where = f" ({Path(e.filename).name}:{e.lineno})"
        raise ImplementationError(f"importing {name} failed{where}: {type(e).__name__}: {e}") from None


def _load_remote(name: str):
    from .remote.client import WorkerError, current

    try:
        return current().import_module(name)
    except WorkerError:
        raise
    except Exception as e:  # noqa: BLE001 - the submission's import failed in the worker: say where
        frames = [f for f in getattr(e, "submission_traceback", []) if str(f[0]).startswith("/submission/")]
        where = f" ({frames[-1][0].removeprefix('/submission/')}:{frames[-1][1]})" if frames else ""
        kind = type(e).__name__
        raise ImplementationError(f"importing {name} failed{where}: {kind}: {e}") from None


def copy_tree(src: Path, dst: Path) -> None:
    """Copy an implementation folder (used by tooling tests that build mutant submissions)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)


class Modules:
    """`Modules("kv_cache").attention` imports kv_cache.attention from the code under test on
    first use, so a broken file costs only the tests that use it."""

    def __init__(self, assignment: str, aliases: dict[str, str] | None = None):
        self._assignment, self._aliases = assignment, aliases or {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return load(self._assignment, self._aliases.get(name, name))
