"""The student edition (`python -m autograder student-repo OUT`): no solution code in it, and in it
the grader works: grading the stubs gives 0 on every assignment, each failing test with its
reason; `make test` there grades the student's work; the block_manager bench runs without the
reference it compares with in the course repository."""
import json
import subprocess
import sys

import pytest

from autograder import REPO_ROOT, student_repo


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("edition") / "course"
    files = student_repo.make(out)
    return out, files


def _run(cwd, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_no_solutions_in_the_edition(edition):
    out, files = edition
    assert not (out / "solutions").exists() and not (out / "autograder" / "tests").exists()
    assert all(not f.startswith("solutions/") for f in files)
    assert (out / "assignments" / "zero" / "engine.py").is_file() and (out / "autograder" / "suites").is_dir()
    for f in (out / "assignments").rglob("*"):
        if f.suffix in (".py", ".ipynb"):
            assert "BEGIN SOLUTION" not in f.read_text(errors="ignore"), f


def test_make_test_grades_the_students_work_there(edition):
    out, _ = edition
    dry = subprocess.run(["make", "-n", "test", f"VENV={REPO_ROOT / '.venv'}"], cwd=out, capture_output=True, text=True)
    assert "autograder grade --impl assignments" in dry.stdout and "pytest autograder/tests" not in dry.stdout, \
        dry.stdout


@pytest.mark.slow
def test_grading_the_stubs_there_gives_zero_with_reasons(edition, tmp_path):
    out, _ = edition
    r = _run(out, "grade", "--brief", "-q", "--out", str(tmp_path / "res"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads((tmp_path / "res" / "grade.json").read_text())
    assert {a["name"] for a in rep["assignments"]} == {"kv_cache", "block_manager", "paged_attention", "engine", "zero"}
    for a in rep["assignments"]:
        assert not a["error"], (a["name"], a["error"])
        graded = [t for t in a["tests"] if t["status"] != "not_graded"]
        assert graded, f"{a['name']}: nothing was graded"
        for t in graded:
            assert t["status"] == "failed" and t["score"] == 0 and t["reason"].strip(), (a["name"], t["nodeid"], t)


def test_the_block_manager_bench_runs_there_without_the_reference(edition, tmp_path):
    out, _ = edition
    r = _run(out, "bench", "block_manager", "--impl", str(REPO_ROOT / "solutions"), "--out", str(tmp_path), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "timed alone" in r.stdout or "vLLM BlockPool" in r.stdout, r.stdout[-1500:]
