"""Grading a class: grade-all over a folder of submissions, and the Gradescope autograder zip.

    python -m autograder grade-all SUBMISSIONS_DIR --out DIR [--jobs N] [ASSIGNMENT ...]

Each folder or .zip in SUBMISSIONS_DIR is one student (named by the file's stem). Every
student is graded by the ordinary `grade` command in its own process, so one submission
cannot affect another's grade. The jobs share the machine fairly: each gets its share of the
host-memory limit, and on a GPU machine each job gets a GPU of its own (CUDA_VISIBLE_DEVICES),
so at most one job per GPU: speed is graded as a ratio, which a second job on the same GPU
would corrupt. Results go to DIR/<student>/ (results.json, grade.json, ...).
A student whose DIR/<student>/grade.json exists is skipped, so an interrupted run resumes
where it stopped (--fresh regrades everyone). DIR/gradebook.csv has one row per student:
per-assignment score, total, and speed ratios.
"""
from __future__ import annotations

import csv
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import REPO_ROOT, config


def submissions(folder: Path) -> dict[str, Path]:
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix == ".zip":
            found[p.stem] = p
    return found


def grade_one(student: str, path: Path, out: Path, assignments: list[str], keyword: str | None,
              memory_gb: float | None = None, gpu: str | None = None) -> tuple[str, str]:
    dest = out / student
    cmd = [sys.executable, "-m", "autograder", "grade", *assignments, "--impl", str(path), "--out", str(dest), "-q", "--brief"]
    if keyword:
        cmd += ["-k", keyword]
    if memory_gb:
        cmd += ["--host-memory-gb", f"{memory_gb:.2f}"]
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}))
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    (dest / "grader-output.txt").parent.mkdir(parents=True, exist_ok=True)
    (dest / "grader-output.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or not (dest / "grade.json").exists():
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return student, f"NOT GRADED: {last}"
    return student, "graded"


def gradebook(out: Path, students: list[str]) -> Path:
    names = config.assignments()
    path = out / "gradebook.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *names, "total", "graded_max", "not_graded_here", "speed_ratios", "status"])
        for s in students:
            g = out / s / "grade.json"
            if not g.exists():
                w.writerow([s, *[""] * len(names), "", "", "", "", "not graded"])
                continue
            rep = json.loads(g.read_text())
            by = {a["name"]: a for a in rep["assignments"]}
            scores, total, gmax, ung, ratios = [], 0.0, 0.0, 0.0, []
            for n in names:
                a = by.get(n)
                if a is None:
                    scores.append("")
                    continue
                sc = round(sum(t["score"] for t in a["tests"]), 4)
                scores.append(sc)
                total += sc
                gmax += sum(t["max_score"] for t in a["tests"] if t["status"] != "not_graded")
                ung += sum(t["max_score"] for t in a["tests"] if t["status"] == "not_graded")
                ratios += [f"{t['nodeid'].split('::')[-1]}={t['extra']['ratio']:.3f}" for t in a["tests"] if "ratio" in t.get("extra", {})]
            w.writerow([s, *scores, round(total, 4), gmax, ung, " ".join(ratios), "graded"])
    return path


def grade_all(folder: Path, out: Path, assignments: list[str], jobs: int, fresh: bool, keyword: str | None) -> int:
    subs = submissions(folder)
    if not subs:
        print(f"no submissions (folders or .zip files) in {folder}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    todo = {s: p for s, p in subs.items() if fresh or not (out / s / "grade.json").exists()}
    gpus = visible_gpus()
    if gpus and jobs > len(gpus):
        print(f"{len(gpus)} GPU(s): grading {len(gpus)} at a time, not {jobs} (a speed grade needs a GPU to itself)")
        jobs = len(gpus)
    free: queue.Queue = queue.Queue()
    for g in gpus or [None] * jobs:
        free.put(g)
    from .runner import host_memory_limit

    memory_gb = host_memory_limit() / 2**30 / jobs

    def job(kv):
        gpu = free.get()
        try:
            return grade_one(kv[0], kv[1], out, assignments, keyword, memory_gb, gpu)
        finally:
            free.put(gpu)

    print(f"{len(subs)} submissions, {len(subs) - len(todo)} already graded, {len(todo)} to grade with {jobs} at a time"
          f" ({memory_gb:.1f} GB of RAM each{', one GPU each' if gpus else ''})")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for student, status in pool.map(job, todo.items()):
            print(f"  {student}: {status}", flush=True)
    book = gradebook(out, list(subs))
    print(f"gradebook: {book}")
    return 0


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use, as CUDA_VISIBLE_DEVICES entries ([] without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(r.stdout.splitlines()) if line.startswith("GPU ")] if r.returncode == 0 else []


# ----------------------------------------------------------------------------- Gradescope

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when building the autograder image.
set -euo pipefail
cd /autograder/source
apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null || true
python3 -m pip install -q --upgrade pip
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q "${TORCH_SPEC:-torch}"
python3 -m pip install -q -e .
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; results.json must land in /autograder/results/.
cd /autograder/source
python3 -m autograder grade {assignments} --impl /autograder/submission --out /autograder/results -q --brief
test -s /autograder/results/results.json || echo '{{"score": 0, "output": "the grader could not run; contact the course staff"}}' > /autograder/results/results.json
"""


def gradescope_zip(out: Path, assignments: list[str]) -> Path:
    """autograder.zip for Gradescope: setup.sh, run_autograder and the grader, without solutions/."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for item in ("autograder", "data", "pyproject.toml", "README.md"):
            src = REPO_ROOT / item
            if src.is_dir():
                shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
            else:
                shutil.copy(src, root / item)
        (root / "setup.sh").write_text(SETUP_SH)
        (root / "run_autograder").write_text(RUN_AUTOGRADER.format(assignments=" ".join(assignments)))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    info = zipfile.ZipInfo.from_file(f, f.relative_to(root).as_posix())
                    if f.name in ("setup.sh", "run_autograder"):
                        info.external_attr = 0o755 << 16
                    zf.writestr(info, f.read_bytes())
    return out
