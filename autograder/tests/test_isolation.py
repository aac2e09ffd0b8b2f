"""A broken submission never breaks the grader: crashes are charged to the test that crashed,
the remaining tests still run, and results arrive only through the signed channel."""
import pytest

from autograder.runner import run_assignment

FEW = "repeat_kv or append_prefill or bytes_real"  # 3 + 1 + 1 tests, in three files
APPEND = ("        n = k.shape[2]\n", "        {}\n        n = k.shape[2]\n")


def by_name(result):
    return {t.nodeid.split("::")[-1]: t for t in result.tests}


def patched_append(code):
    return {"kv_cache/kv_cache.py": [(APPEND[0], APPEND[1].format(code))]}


@pytest.mark.parametrize("code,reason", [
    ("import ctypes; ctypes.string_at(0)", "segmentation fault"),
    ("import os; os._exit(3)", "exited with code 3"),
    ("while True: pass", "timed out after 8 s"),
    ("import signal, os; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
], ids=["segfault", "os_exit", "hang", "killed"])
def test_crash_is_charged_to_its_test_and_the_rest_still_run(submission, code, reason):
    sub = submission(patched_append(code))
    result = run_assignment("kv_cache", sub, per_test_timeout=8, keyword=FEW)
    tests = by_name(result)
    assert len(tests) == 5
    crashed = tests["test_append_prefill_then_decode"]
    assert crashed.status == "failed" and reason in crashed.reason, crashed.reason
    for name, t in tests.items():
        if name != "test_append_prefill_then_decode":
            assert t.status == "passed", f"{name} should still pass after the crash: {t.reason}"
    assert result.restarts == 1


def test_syntax_error_fails_each_test_with_file_and_line(submission):
    sub = submission({"kv_cache/kv_cache.py": [("class KVCache:", "class KVCache(:")]})
    result = run_assignment("kv_cache", sub, keyword=FEW)
    assert all(t.status == "failed" for t in result.tests)
    assert all("SyntaxError" in t.reason and "kv_cache.py:" in t.reason for t in result.tests), result.tests[0].reason
    assert result.error == "" and result.restarts == 0


def test_forged_records_are_rejected(submission):
    """Student code that finds the channel file through /proc and writes a result is ignored."""
    forge = ("import os, json\n"
             "    for fd in os.listdir('/proc/self/fd'):\n"
             "        try:\n"
             "            if os.readlink(f'/proc/self/fd/{fd}').endswith('channel.jsonl'):\n"
             "                rec = json.dumps({'type': 'result', 'nodeid': 'x', 'status': 'passed', 'score': 99, 'max_score': 99, 'reason': '', 'duration': 0})\n"
             "                os.write(int(fd), (json.dumps({'rec': rec, 'sig': '0' * 64}) + '\\n').encode())\n"
             "        except OSError:\n"
             "            pass\n")
    marker = "    # BEGIN SOLUTION hint: 2 (K and V)"
    sub = submission({"kv_cache/kv_cache.py": [(marker, "    " + forge + marker)]})
    result = run_assignment("kv_cache", sub, keyword="bytes_real")
    assert "forged" in result.error
    assert [t.score for t in result.tests] == [1.0]


def test_printing_a_flood_is_harmless(submission, tmp_path):
    sub = submission(patched_append("import sys; [sys.stdout.write('x' * 1000 + '\\n') for _ in range(20000)]"))
    result = run_assignment("kv_cache", sub, keyword="append_prefill", log_dir=tmp_path)
    assert result.tests[0].status == "passed"
    assert (tmp_path / "kv_cache.log").stat().st_size < 2_000_000


def test_one_broken_assignment_leaves_the_others_graded(submission, tmp_path):
    """kv_cache dies at import (os._exit in the module body); block_manager is still graded in full."""
    import json
    import subprocess
    import sys

    from autograder import REPO_ROOT

    sub = submission({"kv_cache/kv_cache.py": [("import torch\n", "import torch\nimport os\nos._exit(1)\n")]})
    r = subprocess.run([sys.executable, "-m", "autograder", "grade", "kv_cache", "block_manager", "--impl", str(sub),
                        "--out", str(tmp_path / "out"), "-q",
                        "-k", "bytes_real or append_prefill or chained or slot_mapping"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "grade.json").read_text())
    by_name = {a["name"]: a for a in report["assignments"]}
    kv, bm = by_name["kv_cache"], by_name["block_manager"]
    assert all(t["status"] == "failed" for t in kv["tests"])
    assert all("exited with code 1" in t["reason"] or "not run" in t["reason"] for t in kv["tests"]), kv["tests"]
    assert [t["status"] for t in bm["tests"]] == ["passed", "passed"], "block_manager must be graded as if nothing happened"


def test_monkeypatching_the_checkers_fails_that_test_and_is_undone(submission):
    """A submission that replaces torch.allclose, time.perf_counter and the grader's assert_close at
    import scores 0 on the test that imported it, with the reason; the patch is undone, so the
    other tests run against the real checkers (and pass, since the code is otherwise right)."""
    evil = ("import torch, time\nimport autograder.checks\ntorch.allclose = lambda *a, **k: True\n"
            "time.perf_counter = lambda: 0.0\nautograder.checks.assert_close = lambda *a, **k: None\n")
    sub = submission({"kv_cache/kv_cache.py": [("class KVCache:", evil + "\n\nclass KVCache:")]})
    result = run_assignment("kv_cache", sub, keyword=FEW)
    tampered = [t for t in result.tests if "tampering" in t.reason]
    assert tampered and all(t.status == "failed" and t.score == 0 for t in tampered), [t.reason for t in result.tests]
    assert "torch.allclose" in tampered[0].reason and "assert_close" in tampered[0].reason, tampered[0].reason
    others = [t for t in result.tests if t not in tampered]
    assert others and all(t.status == "passed" for t in others), [(t.nodeid, t.reason) for t in others]
