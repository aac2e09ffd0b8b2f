"""Grades the reference many times, each with a fresh seed, and fails on any point it loses.

    python -m autograder stability [ASSIGNMENT ...] --runs 20 [--jobs 2] [-k EXPR] [--out DIR]

Every graded test draws its inputs from the run's seed (checks.seed_for_test), so one grading
run checks one draw of inputs; a tolerance fitted to the draws that happened to pass fails a
later run now and then, and a student loses the points. This command is the check for that:
each run is the ordinary `grade` command (classroom.grade_one, as grade-all runs it) on
`--impl solutions` with a seed drawn here from the operating system's entropy and printed, into
DIR/run-NN-seed-S/ (grade.json, results.json, logs/, grader-output.txt). At the end it prints, per
test that lost points in any run, in how many runs, how many points, and the command that
replays each loss (`grade A --impl solutions --seed S -k TEST`), and writes DIR/stability.json.

Tests "not graded here" (GPU tiers on a CPU machine, a baseline this machine lacks) are not
losses. Exit code: 0 when the reference kept every graded point in every run; 1 when it lost a
point; 3 when a run could not grade (a suite not collected, the grader failed or timed out) or
no test was graded at all (a -k that matches nothing here).
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config

EXIT_LOST, EXIT_BROKEN = 1, 3
_K_IDENT = re.compile(r"^[\w:+\-.\[\]\\/]+$")  # what pytest -k accepts as one name


@dataclass
class Run:
    index: int
    seed: int
    out: Path
    status: str = ""                 # "graded", or "NOT GRADED: why" (classroom.grade_one)
    duration: float = 0.0
    report: dict | None = None       # its grade.json
    problems: list[str] = field(default_factory=list)  # why this run did not grade (exit 3)


def draw_seed() -> int:
    """A run seed from the operating system's entropy, in the range `grade` draws from."""
    return secrets.randbelow(2**31)


def replay_k(nodeid: str) -> str:
    """A -k expression that selects this test: its name with the parameters when pytest accepts
    them as one name, else the function's name (the seed still gives that test the same inputs)."""
    name = nodeid.split("::")[-1]
    return name if _K_IDENT.match(name) else name.split("[")[0]


def examine(run: Run) -> None:
    """Read the run's grade.json and note what made it fail to grade (exit 3)."""
    from .runner import NOT_COLLECTED

    if run.status != "graded":
        run.problems.append(run.status.removeprefix("NOT GRADED: ") or "the grader failed")
    path = run.out / "grade.json"
    try:
        run.report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        run.report = None
        run.problems.append(f"no readable grade.json ({type(e).__name__})")
        return
    if run.report.get("error"):
        run.problems.append(str(run.report["error"]))
    for a in run.report.get("assignments", []):
        if str(a.get("error", "")).startswith(NOT_COLLECTED):
            run.problems.append(f"{a['name']}: {a['error']}")


def summarise(runs: list[Run]) -> dict:
    """Per test over the runs that graded: the runs it was graded in, those it lost points in,
    with the seed, points and reason; and per assignment the tests and points graded."""
    tests: dict[str, dict] = {}
    for run in runs:
        for a in (run.report or {}).get("assignments", []):
            for t in a.get("tests", []):
                key = f"{a['name']}::{t['nodeid'].split('::')[-1]}"
                row = tests.setdefault(key, {"assignment": a["name"], "nodeid": t["nodeid"],
                                             "max_score": t["max_score"], "graded": 0, "not_graded": 0, "losses": []})
                if t["status"] == "not_graded":
                    row["not_graded"] += 1
                    continue
                row["graded"] += 1
                lost = float(t["max_score"]) - float(t["score"])
                if lost > 1e-9:
                    row["losses"].append({"run": run.index, "seed": run.seed, "lost": round(lost, 4),
                                          "reason": t.get("reason", "")})
    return tests


def table(tests: dict[str, dict], runs: list[Run], impl: str) -> str:
    """The report: per assignment what was graded, then every test that lost points, with the
    seeds and the command that replays each loss."""
    graded_runs = [r for r in runs if r.report is not None]
    n = len(graded_runs)
    lines = [f"stability of {impl}: {n} run(s), seeds {', '.join(str(r.seed) for r in graded_runs) or '-'}", ""]
    by_assignment: dict[str, list[dict]] = {}
    for row in tests.values():
        by_assignment.setdefault(row["assignment"], []).append(row)
    lines.append(f"{'assignment':16} {'tests graded':>12} {'not graded here':>15} {'lost in':>8}")
    for name, rows in by_assignment.items():
        graded = [r for r in rows if r["graded"]]
        ung = [r for r in rows if r["not_graded"] and not r["graded"]]
        lost_runs = {x["run"] for r in rows for x in r["losses"]}
        lines.append(f"{name:16} {len(graded):>12} {len(ung):>15} {f'{len(lost_runs)}/{n}':>8}")
    lossy = [r for r in tests.values() if r["losses"]]
    lines.append("")
    if not lossy:
        lines.append(f"no test lost a point in any of the {n} run(s)")
    else:
        width = max(len(r["nodeid"].split("::")[-1]) for r in lossy)
        lines.append(f"{'test':{width + 17}} {'lost in':>8} {'points':>7}  seeds")
        for r in sorted(lossy, key=lambda r: (r["assignment"], r["nodeid"])):
            name = f"{r['assignment']}::{r['nodeid'].split('::')[-1]}"
            runs_lost = len(r["losses"])
            pts = sum(x["lost"] for x in r["losses"])
            seeds = " ".join(str(x["seed"]) for x in r["losses"])
            ratio = f"{runs_lost}/{r['graded']}"
            lines.append(f"{name:{width + 17}} {ratio:>8} {pts:>7g}  {seeds}")
        lines.append("")
        lines.append("replay a loss (the same inputs for that test), and read its reason:")
        for r in sorted(lossy, key=lambda r: (r["assignment"], r["nodeid"])):
            x = r["losses"][0]
            lines.append(f"  python -m autograder grade {r['assignment']} --impl {impl} --seed {x['seed']} "
                         f"-k '{replay_k(r['nodeid'])}'")
            lines.append(f"      {x['reason'][:300]}")
    varied = [r for r in tests.values() if r["graded"] and r["not_graded"]]
    if varied:
        lines.append("")
        lines.append("graded in some runs only (not graded here in the others): "
                     + ", ".join(f"{r['assignment']}::{r['nodeid'].split('::')[-1]} ({r['not_graded']}/{n})"
                                 for r in varied))
    return "\n".join(lines)


def main(assignments: list[str], runs: int, jobs: int, keyword: str | None, out: Path, impl: str = "solutions") -> int:
    from . import classroom
    from .runner import host_memory_limit

    names = assignments or config.assignments()
    unknown = [a for a in names if a not in config.assignments()]
    if unknown or runs < 1:
        print(f"unknown assignment(s): {', '.join(unknown)}; known: {', '.join(config.assignments())}"
              if unknown else "--runs must be at least 1", file=sys.stderr)
        return 2
    out = Path(out).resolve()
    if impl not in ("solutions", "assignments"):
        impl = str(Path(impl).resolve())
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("run-*"), out / "stability.json"]:  # an earlier check's runs are not this one's
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    gpus = classroom.gpu_slots(classroom.visible_gpus(), 1)
    jobs = max(1, min(jobs, runs, len(gpus) if gpus else jobs))  # a GPU each, as grade-all gives
    memory_gb = host_memory_limit() / 2**30 / jobs
    plan = [Run(i, draw_seed(), Path()) for i in range(1, runs + 1)]
    for r in plan:
        r.out = out / f"run-{r.index:02d}-seed-{r.seed}"
    sel = f" -k {keyword!r}" if keyword else ""
    print(f"grading {impl} ({', '.join(names)}{sel}) {runs} time(s), {jobs} at a time; each run's results in "
          f"{out}/run-NN-seed-S/", flush=True)
    lock = threading.Lock()

    def one(run: Run, uid: int, gpu: str | None) -> Run:
        with lock:
            print(f"run {run.index}/{runs}: seed {run.seed}", flush=True)
        run.out.mkdir(parents=True)
        t0 = time.time()
        _, run.status = classroom.grade_one(run.out.name, impl, out, names, keyword, memory_gb, gpu,
                                            env={classroom.UID_ENV: str(uid)}, seed=run.seed)
        run.duration = round(time.time() - t0, 1)
        examine(run)
        with lock:
            print(f"run {run.index}/{runs}: seed {run.seed}: {_one_line(run)} ({run.duration:.0f} s)", flush=True)
        return run

    with classroom.sandbox_uids(jobs) as uids:
        done = list(classroom.map_in_slots(one, plan, uids, gpus))

    tests = summarise(done)
    text = table(tests, done, impl)
    broken = [r for r in done if r.problems]
    lost = any(row["losses"] for row in tests.values())
    if not broken and not any(row["graded"] for row in tests.values()):
        for r in done:  # a check that graded nothing has checked nothing
            r.problems.append("no test was graded: the selection matched none, or none can run here")
        broken = done
    (out / "stability.json").write_text(json.dumps({
        "impl": impl, "assignments": names, "keyword": keyword, "jobs": jobs,
        "runs": [{"run": r.index, "seed": r.seed, "folder": r.out.name, "duration": r.duration,
                  "problems": r.problems} for r in done],
        "tests": list(tests.values()),
        "lost": lost, "broken": bool(broken)}, indent=1))
    print()
    print(text)
    print(f"\nper run: {out}/run-NN-seed-S/ (grade.json, logs/, grader-output.txt); all of it: {out}/stability.json")
    if broken:
        for r in broken:
            print(f"error: run {r.index} (seed {r.seed}) did not grade: {'; '.join(r.problems)[:600]}", file=sys.stderr)
        return EXIT_BROKEN
    if lost:
        print(f"FAILED: {impl} lost points; each loss above is a flaky test (or a bug): find why its tolerance or "
              "its case does not hold for every seed", file=sys.stderr)
        return EXIT_LOST
    return 0


def _one_line(run: Run) -> str:
    if run.report is None:
        return f"did not grade: {'; '.join(run.problems)[:300]}"
    score = graded = ung = 0.0
    lost = []
    for a in run.report.get("assignments", []):
        for t in a.get("tests", []):
            if t["status"] == "not_graded":
                ung += t["max_score"]
                continue
            score, graded = score + t["score"], graded + t["max_score"]
            if t["max_score"] - t["score"] > 1e-9:
                lost.append(t["nodeid"].split("::")[-1])
    text = f"{score:g}/{graded:g}" + (f" ({ung:g} not graded here)" if ung else "")
    if lost:
        text += f"; lost points in {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}"
    if run.problems:
        text += f"; did not grade: {'; '.join(run.problems)[:300]}"
    return text
