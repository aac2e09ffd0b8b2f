"""`python -m autograder stability`: grades the reference N times with fresh seeds and fails on any
point it loses. The end-to-end cases run two cheap block_manager tests (about 15 s a run)."""
import json
import subprocess
import sys
from pathlib import Path

from autograder import REPO_ROOT, stability
from autograder.runner import NOT_COLLECTED

SELECTION = "tail_first or queue_order"   # test_free_releases_the_tail_first, test_queue_order_remove_append


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "stability", "block_manager", "-k", SELECTION,
                           "--out", str(out), *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


def test_the_reference_kept_every_point_in_two_runs_with_their_own_seeds(tmp_path):
    r = run(tmp_path / "out", "--runs", "2", "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "stability.json").read_text())
    seeds = [x["seed"] for x in report["runs"]]
    assert len(seeds) == 2 and seeds[0] != seeds[1], seeds
    for x in report["runs"]:  # each run is a grade of its own, with its seed printed and recorded
        assert f"seed {x['seed']}" in r.stdout, r.stdout
        grade = json.loads((tmp_path / "out" / x["folder"] / "grade.json").read_text())
        assert grade["seed"] == x["seed"] and grade["impl"] == "solutions"
        assert [t["status"] for a in grade["assignments"] for t in a["tests"]] == ["passed", "passed"]
    assert "block_manager" in r.stdout and "0/2" in r.stdout, r.stdout
    assert "no test lost a point in any of the 2 run(s)" in r.stdout, r.stdout


def test_a_lost_point_fails_the_check_with_the_seed_to_replay_it(tmp_path, submission):
    """A copy of the reference whose popleft() takes the back of the free queue."""
    broken = submission({"block_manager/block.py": [("        block = self.head\n        self.remove(block)",
                                                     "        block = self.tail\n        self.remove(block)")]})
    r = run(tmp_path / "out", "--runs", "1", "--impl", str(broken))
    assert r.returncode == stability.EXIT_LOST, r.stdout[-3000:] + r.stderr[-3000:]
    seed = json.loads((tmp_path / "out" / "stability.json").read_text())["runs"][0]["seed"]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("block_manager::test_queue_order_remove_append"))
    assert line.split()[1:] == ["1/1", "2", str(seed)], line
    assert f"--seed {seed} -k 'test_queue_order_remove_append'" in r.stdout, r.stdout
    assert not any(ln.startswith("block_manager::test_free_releases_the_tail_first") for ln in r.stdout.splitlines())


def _run(tmp_path: Path, index: int, seed: int, tests: list[dict], error: str = "") -> stability.Run:
    out = tmp_path / f"run-{index}"
    out.mkdir()
    rep = {"impl": "solutions", "seed": seed, "error": "",
           "assignments": [{"name": "kv_cache", "error": error, "tests": tests}]}
    (out / "grade.json").write_text(json.dumps(rep))
    r = stability.Run(index, seed, out, status="graded")
    stability.examine(r)
    return r


def t(name: str, status: str, score: float, max_score: float = 2, reason: str = "") -> dict:
    return {"nodeid": f"kv_cache/test_x.py::{name}", "status": status, "score": score, "max_score": max_score,
            "reason": reason}


def test_not_graded_here_is_no_loss_a_partial_score_is(tmp_path):
    runs = [_run(tmp_path, 1, 11, [t("test_a[1-3]", "passed", 2), t("test_gpu", "not_graded", 0),
                                   t("test_speed", "passed", 1.5, reason="ratio 0.9")]),
            _run(tmp_path, 2, 22, [t("test_a[1-3]", "failed", 0, reason="AssertionError: 3 of 8 differ"),
                                   t("test_gpu", "not_graded", 0), t("test_speed", "passed", 2)])]
    tests = stability.summarise(runs)
    assert not any(r.problems for r in runs)
    assert tests["kv_cache::test_gpu"]["losses"] == [] and tests["kv_cache::test_gpu"]["graded"] == 0
    assert [(x["seed"], x["lost"]) for x in tests["kv_cache::test_a[1-3]"]["losses"]] == [(22, 2)]
    assert [(x["seed"], x["lost"]) for x in tests["kv_cache::test_speed"]["losses"]] == [(11, 0.5)]
    text = stability.table(tests, runs, "solutions")
    assert "--seed 22 -k 'test_a[1-3]'" in text and "3 of 8 differ" in text, text
    row = next(ln for ln in text.splitlines() if ln.startswith("kv_cache "))
    assert row.split() == ["kv_cache", "2", "1", "2/2"], text  # 2 graded, 1 not graded here, a loss in both runs


def test_a_suite_that_could_not_be_collected_is_a_broken_run(tmp_path):
    r = _run(tmp_path, 1, 5, [], error=NOT_COLLECTED + "ModuleNotFoundError: No module named 'hypothesis'")
    assert r.problems and "hypothesis" in r.problems[0]
    assert stability.replay_k("a/test_b.py::test_c[x y]") == "test_c"  # a name -k cannot take: the function's
