"""End to end through the CLI, as the README runs it."""
import json
import subprocess
import sys

import pytest

from autograder import REPO_ROOT


def grade(impl, out, *extra):
    return subprocess.run([sys.executable, "-m", "autograder", "grade", "--impl", impl, "--out", str(out), "-q",
                           *extra],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_solutions_get_full_marks_and_stubs_get_zero(tmp_path):
    sol = grade("solutions", tmp_path / "sol")
    assert sol.returncode == 0, sol.stderr[-2000:]
    d = json.loads((tmp_path / "sol" / "results.json").read_text())
    graded = [t for t in d["tests"] if "not_graded" not in t["tags"]]
    bad = [(t["name"], t["output"]) for t in graded if t["score"] != t["max_score"]]
    assert not bad, f"the reference solution lost points: {bad}"
    assert d["score"] == sum(t["max_score"] for t in graded) > 0

    stub = grade("assignments", tmp_path / "stub")
    assert stub.returncode == 0, stub.stderr[-2000:]
    d = json.loads((tmp_path / "stub" / "results.json").read_text())
    assert d["score"] == 0
    graded = [t for t in d["tests"] if "not_graded" not in t["tags"]]
    assert graded and all(t["output"].startswith("not implemented") for t in graded), \
        [t["output"] for t in graded if not t["output"].startswith("not implemented")][:3]
    assert "Traceback" not in stub.stdout


def test_unknown_assignment_and_missing_impl_exit_2(tmp_path):
    assert grade("solutions", tmp_path, "no_such_assignment").returncode == 2
    assert grade(str(tmp_path / "nowhere"), tmp_path).returncode == 2


def test_zip_submission_is_graded(tmp_path):
    import shutil

    shutil.make_archive(str(tmp_path / "sub"), "zip", REPO_ROOT / "solutions")
    r = grade(str(tmp_path / "sub.zip"), tmp_path / "out", "kv_cache", "-k", "bytes_real")
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "out" / "results.json").read_text())
    assert d["score"] == 1.0


def test_reference_below_charges_only_the_engines_own_code(tmp_path):
    """The stubs' engine fails on block_manager's stub; with --reference-below, on its own."""
    plain = grade("assignments", tmp_path / "plain", "engine", "-k", "fcfs")
    below = grade("assignments", tmp_path / "below", "engine", "-k", "fcfs", "--reference-below")
    reasons = lambda out: [t["reason"] for t in json.loads((out / "grade.json").read_text())["assignments"][0]["tests"]]  # noqa: E731
    assert plain.returncode == below.returncode == 0, (plain.stderr[-1500:], below.stderr[-1500:])
    assert all("block_manager" in r for r in reasons(tmp_path / "plain")), reasons(tmp_path / "plain")
    assert all("engine/scheduler.py" in r and "block_manager" not in r for r in reasons(tmp_path / "below")), \
        reasons(tmp_path / "below")


def test_a_run_prints_and_records_its_seed(tmp_path):
    r = grade("solutions", tmp_path / "out", "block_manager", "-k", "tail_first", "--seed", "77")
    assert r.returncode == 0 and "run seed 77" in r.stdout, r.stdout[-1500:]
    assert json.loads((tmp_path / "out" / "grade.json").read_text())["seed"] == 77
