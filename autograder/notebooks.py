"""The tutorial notebooks, with nbgrader: solutions/notebooks/<assignment>/*.ipynb are the
sources (solution regions and hidden tests marked as nbgrader marks them); the student copies
in assignments/notebooks/<assignment>/ are what `nbgrader generate_assignment` makes of them.

    python -m autograder release            # also regenerates the notebooks (needs nbgrader)
    python -m autograder notebooks [--impl solutions]   # nbgrader autograde, headless

Each run works in a throwaway nbgrader course folder (source/, release/, submitted/,
autograded/, gradebook.db), so nothing of nbgrader's state lands in the repository.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import REPO_ROOT

SOURCE = REPO_ROOT / "solutions" / "notebooks"
RELEASE = REPO_ROOT / "assignments" / "notebooks"


def assignments() -> list[str]:
    return sorted(p.name for p in SOURCE.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _api(root: Path):
    # nbgrader runs `alembic` (its gradebook migrations) as a command: the venv's bin must be on PATH
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    c.Execute.timeout = 300
    return NbGraderAPI(config=c)


def _course(tmp: Path, name: str) -> Path:
    root = tmp / "course"
    shutil.copytree(SOURCE / name, root / "source" / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def generate(name: str, dest: Path) -> None:
    """nbgrader generate_assignment `name` into dest/ (the student copies)."""
    with tempfile.TemporaryDirectory(prefix="nbgrader-") as t:
        root = _course(Path(t), name)
        res = _api(root).generate_assignment(name, force=True)
        if not res["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{res['log'][-3000:]}")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(root / "release" / name, dest)


def release(check: bool = False) -> list[str]:
    """Regenerate assignments/notebooks/; with check, return the notebooks that differ instead."""
    stale = []
    for name in assignments():
        if not check:
            generate(name, RELEASE / name)
            continue
        with tempfile.TemporaryDirectory() as t:
            fresh = Path(t) / name
            generate(name, fresh)
            for nb in sorted(fresh.glob("*.ipynb")):
                have = RELEASE / name / nb.name
                if not have.exists() or _cells(have) != _cells(nb):
                    stale.append(f"assignments/notebooks/{name}/{nb.name}")
            extra = {p.name for p in (RELEASE / name).glob("*.ipynb")} - {p.name for p in fresh.glob("*.ipynb")}
            stale += [f"assignments/notebooks/{name}/{e} (no source)" for e in sorted(extra)]
    return stale


def _cells(path: Path) -> list[tuple[str, str]]:
    nb = json.loads(path.read_text())
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def failures(autograded: Path) -> list[str]:
    """For each graded test cell of an autograded notebook that lost points: its id, its points
    and the error it raised (the hidden test's assertion message says what it expected)."""
    out = []
    nb = json.loads(autograded.read_text())
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or meta.get("solution"):
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            e = errors[0]
            message = str(e.get("evalue", "")).strip()[:300]
            if not message:  # a bare assert: the failing line says what the test expected
                import re

                lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in e.get("traceback", [])]
                marked = [ln.split("---->", 1)[1] for t in lines for ln in t.splitlines() if "---->" in ln]
                message = re.sub(r"^\s*\d+\s*", "", marked[-1]).strip()[:300] if marked else "(no message)"
            out.append(f"{autograded.stem}: {meta.get('grade_id', '?')} ({meta.get('points', 0):g} pt): "
                       f"{e.get('ename', 'Error')}: {message}")
    return out


@contextlib.contextmanager
def _quiet():
    """nbgrader's SQLAlchemy warnings and the kernels' "running over TCP" notices go to a file,
    shown only if grading fails."""
    import warnings

    log = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield log
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def grade(folder: Path, name: str, student: str = "student") -> dict:
    """nbgrader autograde the notebooks in folder/ as `student`'s submission of `name`.
    Returns {"score", "max_score", "notebooks": {notebook: (score, max)}, "failures": [...]}:
    each failed hidden test with what it raised."""
    from nbgrader.api import Gradebook

    with tempfile.TemporaryDirectory(prefix="nbgrader-") as t:
        root = _course(Path(t), name)
        api = _api(root)
        res = api.generate_assignment(name, force=True)  # registers the assignment and its tests in the gradebook
        if not res["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{res['log'][-3000:]}")
        sub = root / "submitted" / student / name
        sub.mkdir(parents=True)
        for nb in folder.glob("*.ipynb"):
            shutil.copy(nb, sub / nb.name)
        with _quiet() as noise:
            res = api.autograde(name, student, force=True, create=True)
        if not res["success"]:
            noise.seek(0)
            raise RuntimeError(f"nbgrader autograde {name} failed:\n{res['log'][-3000:]}\n"
                               f"{noise.read().decode(errors='replace')[-2000:]}")
        failed = [f for nb in sorted((root / "autograded" / student / name).glob("*.ipynb")) for f in failures(nb)]
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
            s = gb.find_submission(name, student)
            per = {n.name: (n.score, n.max_score) for n in s.notebooks}
            return {"score": s.score, "max_score": s.max_score, "notebooks": per, "failures": failed}
