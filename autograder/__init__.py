"""The course autograder: release tool, graded suites, grading CLI, speed harness, baselines.

Layout:
    release.py        solutions/ -> assignments/ (fenced regions become stubs)
    impl.py           the one resolver that says which code a graded suite tests (and the staged copy)
    remote/           the sandboxed worker that runs submission code, and the proxies tests use
    pytest_plugin.py  runs inside each suite's subprocess: points, tiers, signed result records
    runner.py         the passes of each assignment, time and memory limits, record checks
    sandbox.py        the legacy in-process guards (the speed tier and zero, until they move)
    report.py         terminal table, results.json (Gradescope), JUnit XML, Markdown
    timing.py         the speed harness every speed test uses
    baselines/        vLLM, DeepSpeed, transformers, naive PyTorch, with availability detection
    suites/<name>/    the graded tests, one folder per assignment
    grading.toml      every instructor-editable number: points per speed ratio, time limits
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
SUITES_DIR = PACKAGE_DIR / "suites"
DATA_DIR = REPO_ROOT / "data"
