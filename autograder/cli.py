"""python -m autograder {list, grade, grade-all, stability, release, notebooks, bench, ...}

The exit code says whether grading itself worked (0), not whether the student passed: a
submission that scores 0 still exits 0; a grader that could not write its results does not.
`stability` is the exception, a check of the course: it exits 1 when the reference lost a point.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
import zipfile
from pathlib import Path

from . import REPO_ROOT, config, environment, impl, report, runner
from .results import GradeReport

DEFAULT_OUT = REPO_ROOT / "results"


def _progress(quiet: bool):
    tty = sys.stderr.isatty()

    def say(msg: str) -> None:
        if quiet:
            return
        if tty:
            sys.stderr.write("\r\033[K" + msg[:110])
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    return say


def cmd_list(args) -> int:
    for name in config.assignments():
        tests = runner.collect(name)
        by_tier: dict[str, float] = {}
        for t in tests:
            by_tier[t["tier"]] = by_tier.get(t["tier"], 0) + t["points"]
        tiers = ", ".join(f"{k} {v:g}" for k, v in sorted(by_tier.items()))
        print(f"{name:18} {config.title(name):38} {sum(by_tier.values()):6g} pts  ({tiers}; {len(tests)} tests)")
        if args.verbose:
            for t in tests:
                print(f"    {t['points']:4g}  {t['tier']:11}  {t['nodeid'].split('::')[-1]}")
    return 0


def cmd_grade(args) -> int:
    names = args.assignments or config.assignments()
    unknown = [n for n in names if n not in config.assignments()]
    if unknown:
        print(f"unknown assignment(s): {', '.join(unknown)}; known: {', '.join(config.assignments())}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.k and args.out == str(DEFAULT_OUT):  # a partial run keeps the last full results
        out = DEFAULT_OUT / "partial"
    from .checks import SEED_ENV

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    os.environ[SEED_ENV] = str(seed)  # to the suites (runner._suite_env), never to the worker
    say = _progress(args.quiet)
    t0 = time.time()
    results = []
    rep = GradeReport(impl=str(args.impl), assignments=results, environment=environment.describe(), seed=seed)
    try:
        with impl.staged(args.impl) as root:  # a checked, readable copy, removed afterwards
            for name in names:
                say(f"[{name}] starting")
                below = config.builds_on(name) if args.reference_below else []
                with impl.with_reference_below(root, name) if below else contextlib.nullcontext(root) as where:
                    results.append(runner.run_assignment(name, where, log_dir=out / "logs", progress=say,
                                                         keyword=args.k, protect=[out],
                                                         host_memory_gb=args.host_memory_gb))
                if below:
                    results[-1].notes.append(f"graded on the reference's {', '.join(below)} (--reference-below): "
                                             "only this assignment's own code is graded here")
    except (FileNotFoundError, NotADirectoryError, ValueError, zipfile.BadZipFile) as e:
        print(f"error: {e}", file=sys.stderr)
        rep.error = str(e)
        report.write_all(rep, out)
        return 2
    finally:  # a results file is always written, also when the grader is interrupted
        rep.duration = round(time.time() - t0, 1)
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        report.write_all(rep, out)
    print(report.terminal(rep, verbose=not args.brief))
    print(f"\nresults: {out}/results.json (Gradescope), junit.xml, summary.md, grade.json; logs in {out}/logs/")
    print(f"run seed {seed}: `--seed {seed}` gives the same inputs again (with -k TEST, one test)")
    broken = [r for r in results if r.error.startswith(runner.NOT_COLLECTED)]
    if broken:  # the suites import no submission code: this is the grading environment, not the work graded
        for r in broken:
            print(f"error: {r.name}: {r.error}", file=sys.stderr)
        print("error: these grades are not valid: the grader could not load its own tests. Run it with the "
              "course's environment (`make setup`, then `.venv/bin/python -m autograder ...` or `make grade`).",
              file=sys.stderr)
        return 3
    return 0


def cmd_release(args) -> int:
    from . import release

    return release.main(check_only=args.check)


def cmd_notebooks(args) -> int:
    from . import notebooks

    if not notebooks.SOURCE.is_dir():
        print("not graded here: the notebooks' hidden tests are in the course's source notebooks, which the student "
              "edition does not have; run a notebook's visible cells to check yourself (docs: README, Tutorial "
              "notebooks)")
        return 0

    folder = notebooks.SOURCE if args.impl == "solutions" else (
        notebooks.RELEASE if args.impl == "assignments" else Path(args.impl))
    total = maximum = 0.0
    for name in args.assignments or notebooks.assignments():
        where = folder / name if (folder / name).is_dir() else folder
        r = notebooks.grade(where, name)
        total, maximum = total + r["score"], maximum + r["max_score"]
        print(f"{name}: {r['score']:g}/{r['max_score']:g}")
        for nb, (sc, mx) in sorted(r["notebooks"].items()):
            print(f"   {sc:g}/{mx:g}  {nb}")
        for f in r.get("failures", []):
            print(f"      failed: {f}")
    print(f"notebooks total {total:g}/{maximum:g}")
    return 0


def cmd_student_repo(args) -> int:
    from . import student_repo

    files = student_repo.make(Path(args.out))
    print(f"wrote the student edition to {args.out}: {len(files)} files, no solutions/ "
          f"(left out: {', '.join(student_repo.LEFT_OUT)}); `git init` it, or copy it into the class's template")
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(args.assignment, impl.resolve(args.impl), Path(args.out))


def cmd_grade_all(args) -> int:
    from . import classroom

    return classroom.grade_all(Path(args.submissions), Path(args.out), args.assignments, args.jobs, args.fresh, args.k,
                               gpus_per_job=args.gpus_per_job)


def cmd_stability(args) -> int:
    from . import stability

    return stability.main(args.assignments, args.runs, args.jobs, args.k, Path(args.out), impl=args.impl)


def cmd_gradescope(args) -> int:
    from . import classroom

    path = classroom.gradescope_zip(Path(args.out), args.assignments)
    print(f"wrote {path}: upload it as the Gradescope autograder (Ubuntu image); it grades the submission folder "
          "with the same CLI and writes results.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("list", help="assignments, points and tiers")
    s.add_argument("-v", "--verbose", action="store_true", help="list every test")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("grade", help="grade assignments; writes results.json, junit.xml, summary.md")
    s.add_argument("assignments", nargs="*", help=f"default: all ({', '.join(config.assignments())})")
    s.add_argument("--impl", default="assignments", help="assignments (default), solutions, or a submission folder/zip")
    s.add_argument("--out", default=str(DEFAULT_OUT),
                   help="where results go (default: results/; results/partial/ with -k)")
    s.add_argument("-k", default=None, help="only tests matching this pytest -k expression")
    s.add_argument("--seed", type=int, default=None, help="the run's seed (printed by every run): replays its inputs")
    s.add_argument("--reference-below", action="store_true",
                   help="grade assignments that build on earlier ones (engine) on the reference's earlier assignments")
    s.add_argument("--brief", action="store_true", help="totals only, no per-test table")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.add_argument("--host-memory-gb", type=float, default=None,
                   help="RAM one suite may use before its test is killed (default: grading.toml host_memory_gb)")
    s.set_defaults(fn=cmd_grade)

    s = sub.add_parser("grade-all", help="grade every submission (folder or zip) in a folder; writes gradebook.csv")
    s.add_argument("submissions")
    s.add_argument("assignments", nargs="*")
    s.add_argument("--out", default=str(REPO_ROOT / "class-results"))
    s.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="submissions graded at once (on a GPU machine at most one per GPU: each job gets its own)")
    s.add_argument("--gpus-per-job", type=int, default=1,
                   help="GPUs each job gets (default 1; 2 grades ZeRO's multi-GPU tier, "
                        "with half as many jobs at once)")
    s.add_argument("--fresh", action="store_true", help="regrade students already graded")
    s.add_argument("-k", default=None, help="only tests matching this pytest -k expression")
    s.set_defaults(fn=cmd_grade_all)

    s = sub.add_parser("stability", help="grade the reference N times with fresh seeds; fail on any point it loses")
    s.add_argument("assignments", nargs="*", help=f"default: all ({', '.join(config.assignments())})")
    s.add_argument("--runs", type=int, default=20, help="grading runs, each with its own seed (default 20)")
    s.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1; a GPU each on a GPU machine)")
    s.add_argument("-k", default=None, help="only tests matching this pytest -k expression")
    s.add_argument("--out", default=str(REPO_ROOT / "stability-results"),
                   help="one folder per run (run-NN-seed-S/) and stability.json (default: stability-results/)")
    s.add_argument("--impl", default="solutions", help="what to grade (default: the reference, solutions)")
    s.set_defaults(fn=cmd_stability)

    s = sub.add_parser("gradescope", help="build the Gradescope autograder zip")
    s.add_argument("assignments", nargs="*")
    s.add_argument("--out", default=str(REPO_ROOT / "autograder.zip"))
    s.set_defaults(fn=cmd_gradescope)

    s = sub.add_parser("student-repo",
                       help="write the student edition of this repository (no solutions/) to a new folder")
    s.add_argument("out")
    s.set_defaults(fn=cmd_student_repo)

    s = sub.add_parser("release", help="write assignments/ from solutions/ (fenced regions become stubs)")
    s.add_argument("--check", action="store_true", help="fail if assignments/ is out of date or a marker is left")
    s.set_defaults(fn=cmd_release)

    s = sub.add_parser("notebooks", help="nbgrader autograde the tutorial notebooks (headless)")
    s.add_argument("assignments", nargs="*", help="default: all (vllm, deepspeed)")
    s.add_argument("--impl", default="assignments", help="assignments (default), solutions, or a folder of notebooks")
    s.set_defaults(fn=cmd_notebooks)
    s = sub.add_parser("bench", help="speed tables and plots (GPU)")
    s.add_argument("assignment")
    s.add_argument("--impl", default="solutions")
    s.add_argument("--out", default=str(REPO_ROOT / "bench-results"))
    s.set_defaults(fn=cmd_bench)

    args = p.parse_args(argv)
    return args.fn(args)
