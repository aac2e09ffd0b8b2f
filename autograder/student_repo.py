"""The student edition of the course repository: everything a student needs, no solutions.

    python -m autograder student-repo OUT      # OUT must not exist, or be empty

What it holds: the assignments (stubs) and their released notebooks, the grader with every tier
(the suites, the baselines' adapters, the benches), the course library, data, docs, the Makefile
and the README (with a note on top). What it leaves out: `solutions/` (the reference, the source
notebooks with their hidden tests), the course's own tests (`autograder/tests/`: they grade the
reference), instructor files (CHANGELOG, CI of the course), and anything git does not track.

In the student edition `make test` grades the student's assignments (there is no reference to
test the course against); the notebooks' hidden tests stay with the course staff; `bench
block_manager` compares with vLLM where installed and otherwise with nothing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import REPO_ROOT

LEFT_OUT = ("solutions/", "autograder/tests/", ".ci/", "CHANGELOG.md", "docs/templates/")

NOTE = """> **Student edition.** This copy of the course has no `solutions/` and no course self-tests.
> `make test` and `make grade` both grade your work in `assignments/`; the tutorial notebooks'
> hidden tests are kept by the course staff (run the visible cells to check yourself).

"""


def tracked_files() -> list[str]:
    """The repository's files as git tracks them (what a clone holds), or, outside a git
    checkout, every file except build products."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60)
        return [f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        skip = ("__pycache__", ".venv", ".git", "results", "bench-results", "class-results", ".egg-info")
        return [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.rglob("*")
                if p.is_file() and not any(s in p.parts or p.name.endswith(s) for s in skip)]


def make(out: Path) -> list[str]:
    """Write the student edition into `out`; returns the files written (relative paths)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new folder")
    written = []
    for rel in tracked_files():
        if rel.startswith(LEFT_OUT) or not (REPO_ROOT / rel).is_file():
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest)
        written.append(rel)
    readme = out / "README.md"
    readme.write_text(NOTE + readme.read_text())
    leaks = [f for f in written if "solutions" in Path(f).parts]
    leaks += [f for f in written if f.startswith("assignments/") and f.endswith((".py", ".ipynb"))
              and "BEGIN SOLUTION" in (out / f).read_text(errors="ignore")]
    if leaks:
        shutil.rmtree(out)
        raise RuntimeError(f"the student edition would hold solution code: {leaks[:5]}")
    return written
