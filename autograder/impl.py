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

import contextlib
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
    """Turn an --impl value into a folder that holds assignment packages (a zip is unpacked into a
    temporary folder: use `staged` to have it removed)."""
    spec = str(spec or "assignments")
    if spec in ("assignments", "solutions"):
        return REPO_ROOT / spec
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"--impl {spec}: no such folder or zip")
    if path.is_file() and path.suffix == ".zip":
        path = _unzip(path, Path(tempfile.mkdtemp(prefix="autograder-submission-")))
    if not path.is_dir():
        raise NotADirectoryError(f"--impl {spec}: expected a folder or a .zip of one")
    return _descend(path)


def limits() -> tuple[int, int]:
    """(files, bytes) a submission may hold: grading.toml [limits] submission_max_files / _mb."""
    from .config import limits as lim

    lm = lim()
    return int(lm.get("submission_max_files", 5000)), int(float(lm.get("submission_max_mb", 200)) * 2**20)


@contextlib.contextmanager
def staged(spec: str | os.PathLike | None):
    """The submission as the grader's worker sees it: a fresh copy, owned by the grader and readable
    by the sandbox's uid (files 0644, folders 0755), without links, caches or version control,
    checked against the size limits; removed afterwards, with whatever a zip was unpacked into."""
    spec_s = str(spec or "assignments")
    tmp = Path(tempfile.mkdtemp(prefix="autograder-submission-"))
    try:
        src = Path(spec_s).expanduser().resolve() if spec_s not in ("assignments", "solutions") else REPO_ROOT / spec_s
        if src.is_file() and src.suffix == ".zip":
            src = _descend(_unzip(src, tmp / "unzipped"))
        else:
            src = resolve(spec_s)
        dest = tmp / "submission"
        _copy_checked(src, dest)
        from .remote.isolation import sandbox_gid

        _restrict(tmp, sandbox_gid())
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def with_reference_below(root: Path, name: str):
    """The staged submission with the reference's code of the assignments `name` builds on
    (grading.toml builds_on) in place of the student's: a second staged copy, for `name`'s suite
    only, so a bug in an earlier assignment is not charged twice. Other suites keep `root`."""
    from .config import builds_on

    below = builds_on(name)
    if not below:
        yield root
        return
    missing = [d for d in below if not (REPO_ROOT / "solutions" / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"--reference-below needs the reference's {', '.join(missing)} in solutions/, which "
                                "this copy of the course does not have (the student edition)")
    tmp = Path(tempfile.mkdtemp(prefix="autograder-submission-"))
    try:
        dest = tmp / "submission"
        shutil.copytree(root, dest)
        for dep in below:
            shutil.rmtree(dest / dep, ignore_errors=True)
            _copy_checked(REPO_ROOT / "solutions" / dep, dest / dep)
        from .remote.isolation import sandbox_gid

        _restrict(tmp, sandbox_gid())
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_checked(src: Path, dest: Path) -> None:
    max_files, max_bytes = limits()
    files, total = 0, 0
    for dirpath, dirnames, filenames in os.walk(src):  # os.walk does not follow links to folders
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".git", ".ipynb_checkpoints")]
        rel = Path(dirpath).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / rel, 0o755)
        for name in filenames:
            f = Path(dirpath) / name
            if f.is_symlink() or not f.is_file() or name.endswith(".pyc"):
                continue  # a link could point at anything on the grading machine
            files += 1
            total += f.stat().st_size
            if files > max_files or total > max_bytes:
                raise ValueError(f"the submission holds more than {max_files} files or {max_bytes >> 20} MB "
                                 "(submission_max_files / submission_max_mb in autograder/grading.toml)")
            shutil.copyfile(f, dest / rel / name)
            os.chmod(dest / rel / name, 0o644)


def _restrict(folder: Path, gid: int | None) -> None:
    """As root: the copy belongs to root and the sandbox's group (folders 0750, files 0640), so the
    worker of this job reads it and another job's worker (another uid) does not. Otherwise the
    grading user's own files: readable by all (0755 / 0644), as _copy_checked left them."""
    if gid is None:
        os.chmod(folder, 0o755)
        return
    for dirpath, _dirs, files in os.walk(folder):
        os.chown(dirpath, 0, gid)
        os.chmod(dirpath, 0o750)
        for f in files:
            os.chown(os.path.join(dirpath, f), 0, gid)
            os.chmod(os.path.join(dirpath, f), 0o640)


def _unzip(path: Path, dest: Path) -> Path:
    """Unpack a zip after checking it: member count and total uncompressed size within the limits
    (a zip bomb is refused before anything is written), no member outside the folder, no links."""
    max_files, max_bytes = limits()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise ValueError(f"{path.name}: {len(infos)} members, more than the {max_files} allowed")
        size = sum(i.file_size for i in infos)
        if size > max_bytes:
            raise ValueError(f"{path.name}: {size >> 20} MB uncompressed, more than the {max_bytes >> 20} MB allowed")
        for info in infos:
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
                raise ValueError(f"{path.name}: zip member {info.filename!r} escapes the folder")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"{path.name}: zip member {info.filename!r} is a symbolic link")
        zf.extractall(dest)  # sizes were checked; zipfile stops each member at its declared size
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
        raise ImplementationError(f"no folder {assignment}/ in {base}: "
                                  "the submission must keep the assignments/ layout")
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
