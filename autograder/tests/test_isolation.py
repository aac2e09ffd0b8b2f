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


def test_suite_time_limit_stops_the_assignment_not_the_grader(submission):
    """Each test slow but under its own limit: the assignment's limit stops the suite; what did not
    run says why and scores 0."""
    sub = submission(patched_append("import time; time.sleep(20)"))
    result = run_assignment("kv_cache", sub, per_test_timeout=60, suite_timeout=12,
                            keyword="append_prefill or bytes_real or repeat_kv")
    assert "ran past its 12 s limit" in result.error, result.error
    assert all(t.status == "failed" and t.score == 0 for t in result.tests if "append" in t.nodeid)
    assert any(t.reason.startswith("not run") or "12 s limit" in t.reason for t in result.tests)


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


# ----------------------------------------------------------------------------- more bad submissions

ATTEND_END = "    return torch.matmul(probs, v).to(q.dtype)\n"


def patched_attend(code):
    """attend() computes its answer into `out`, then runs `code` (which may return)."""
    return {"kv_cache/attention.py": [(ATTEND_END, "    out = torch.matmul(probs, v).to(q.dtype)\n" + code + "    return out\n")]}


@pytest.mark.parametrize("code,reason", [
    ("    out[0, 0, 0, 0] = float('nan')\n", "NaN/inf"),
    ("    out[-1, -1, -1, -1] = float('inf')\n", "NaN/inf"),
    ("    global _CACHED\n    _CACHED = globals().get('_CACHED')\n"
     "    if _CACHED is None or _CACHED.shape != out.shape:\n        _CACHED = torch.empty_like(out)\n"
     "    return _CACHED.copy_(out)\n", "cached output buffer"),
    ("    q[..., 0] = 0\n", "modified its input `q`"),
    ("    return q.copy_(out)\n", "its input `q`"),
    ("    import sys; sys.exit(0)\n", "SystemExit"),
    ("    bytearray(2**50)\n", "host out of memory (MemoryError"),
], ids=["nan", "inf", "cached_output", "mutates_input", "aliases_input", "sys_exit", "memory_error"])
def test_wrong_output_scores_zero_with_its_reason(submission, code, reason):
    """Only the attend tests fail, each with a reason that names the problem; the others pass."""
    sub = submission(patched_attend(code))
    result = run_assignment("kv_cache", sub, keyword="attend_matches or append_prefill or bytes_real")
    tests = by_name(result)
    bad = [t for n, t in tests.items() if "attend" in n]
    assert len(bad) == 6 and all(t.status == "failed" and t.score == 0 for t in bad), [t.reason for t in bad]
    assert all(reason in t.reason for t in bad), bad[0].reason
    assert all(t.status == "passed" for n, t in tests.items() if "attend" not in n)


def test_number_that_is_nan_scores_zero(submission):
    sub = submission({"kv_cache/kv_cache.py": [("def kv_cache_bytes(", "def kv_cache_bytes(*a, **k):\n    return float('nan')\n\n\ndef _unused(")]})
    result = run_assignment("kv_cache", sub, keyword="bytes_real")
    assert [(t.status, t.score) for t in result.tests] == [("failed", 0.0)], result.tests


def test_host_memory_limit_kills_the_test_not_the_machine(submission):
    """A test that keeps allocating is killed at the limit (here 3 GB) and charged; the rest run."""
    hog = "import torch, time; hog = [torch.ones(2**26) for _ in range(12)] or [torch.ones(2**26) for _ in range(20) if not time.sleep(0.05)]"
    sub = submission(patched_append(hog))
    result = run_assignment("kv_cache", sub, keyword=FEW, host_memory_gb=3)
    tests = by_name(result)
    crashed = tests["test_append_prefill_then_decode"]
    assert crashed.status == "failed" and "host out of memory" in crashed.reason and "3.0 GB limit" in crashed.reason, crashed.reason
    assert all(t.status == "passed" for n, t in tests.items() if n != "test_append_prefill_then_decode")


def _alive(pattern: str) -> list[int]:
    """Live processes whose command line matches (from /proc: pgrep is not on every machine)."""
    import re

    from autograder.sandbox import _cmdline, proc_stats

    return [st.pid for st in proc_stats() if st.state != b"Z" and re.search(pattern, _cmdline(st.pid))]


def test_threads_and_processes_left_running_are_charged_and_killed(submission):
    """A thread still running submission code and a child process fail the test that started them;
    the child, and a grandchild that escaped with setsid, are killed; grading does not wait for them."""
    import time

    code = ("import threading, subprocess, time; threading.Thread(target=lambda: time.sleep(40), daemon=False).start(); "
            "subprocess.Popen(['sleep', '3011']); subprocess.Popen(['sh', '-c', 'setsid sleep 3012 & exit 0'])")
    sub = submission(patched_append(code))
    t0 = time.time()
    result = run_assignment("kv_cache", sub, keyword=FEW)
    tests = by_name(result)
    bad = tests["test_append_prefill_then_decode"]
    assert bad.status == "failed" and "left running" in bad.reason, bad.reason
    assert "thread" in bad.reason and "sleep 3011" in bad.reason, bad.reason
    assert all(t.status == "passed" for n, t in tests.items() if n != "test_append_prefill_then_decode")
    assert not _alive("sleep 301[12]"), "leftover processes must be killed"
    assert any("did not exit" in n for n in result.notes) and any("escaped" in n for n in result.notes), result.notes
    assert time.time() - t0 < 40, "grading must not wait for the thread"


@pytest.mark.parametrize("code", [
    "from solutions.kv_cache import kv_cache as _ref",
    "import importlib; importlib.import_module('solutions.kv_cache.attention')",
    "from transformers import AutoModelForCausalLM",
    "import kv_common",
    "import deepspeed",
    "from autograder import baselines",
], ids=["solutions", "import_module", "transformers_model", "suite_module", "deepspeed", "grader_baselines"])
def test_importing_the_reference_or_a_baseline_is_refused(submission, code):
    sub = submission(patched_append(code))
    result = run_assignment("kv_cache", sub, keyword="append_prefill or bytes_real")
    tests = by_name(result)
    bad = tests["test_append_prefill_then_decode"]
    assert bad.status == "failed" and "may not import" in bad.reason, bad.reason
    assert tests["test_kv_cache_bytes_real_models"].status == "passed"


def test_grader_files_are_off_limits(submission, tmp_path):
    """Reading a test file or the reference, writing into the results folder, or truncating the
    result channel by its path is refused; the submission's own files stay readable."""
    from autograder import REPO_ROOT

    out = tmp_path / "out"
    tries = [f"open({str(REPO_ROOT / 'autograder/suites/kv_cache/test_cache.py')!r}).read()",
             f"open({str(REPO_ROOT / 'solutions/kv_cache/attention.py')!r}).read()",
             f"open({str(out / 'results.json')!r}, 'w').write('{{}}')",
             "[open(os.readlink('/proc/self/fd/' + fd), 'w') for fd in os.listdir('/proc/self/fd') "
             "if os.path.exists('/proc/self/fd/' + fd) and os.readlink('/proc/self/fd/' + fd).endswith('channel.jsonl')]"]
    code = "import os\n        refused = []\n" + "".join(
        f"        try:\n            {t}\n        except PermissionError:\n            refused.append({i})\n" for i, t in enumerate(tries))
    code += "        open(__file__).read()\n        assert refused == [0, 1, 2, 3], f'refused {refused}'"
    sub = submission(patched_append(code))
    out.mkdir()
    result = run_assignment("kv_cache", sub, keyword="append_prefill", log_dir=out / "logs", protect=[out])
    assert [t.status for t in result.tests] == ["passed"], result.tests[0].reason
    assert not (out / "results.json").exists() and result.error == ""


# ----------------------------------------------------------------------------- GPU faults (run on a GPU machine)

cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
WILD = ("@triton.jit\ndef _wild_store(p):\n    tl.store(p + 2**36, 1.0)\n\n\n"
        "def paged_attention_decode(")
PA_GPU = "gpu_correctness_grid or gpu_reshape_and_cache"


@cuda
def test_cuda_illegal_memory_access_costs_only_its_test(submission):
    """fp16 decode stores far out of bounds: that test fails with the reason, the process is
    replaced (the CUDA context is unusable after it), and every other GPU test passes."""
    trigger = ('    """.\n    """\n    if query.dtype == torch.float16:\n        _wild_store[(1,)](query)\n'
               "        torch.cuda.synchronize()\n")
    sub = submission({"paged_attention/kernels.py": [
        ("def paged_attention_decode(", WILD),
        ("                           num_stages: int = 2) -> torch.Tensor:\n",
         "                           num_stages: int = 2) -> torch.Tensor:\n" + trigger)]})
    result = run_assignment("paged_attention", sub, keyword=PA_GPU)
    tests = by_name(result)
    bad = tests["test_gpu_correctness_grid[fp16]"]
    assert bad.status == "failed" and "illegal memory access" in bad.reason, bad.reason
    others = {n: t for n, t in tests.items() if n != "test_gpu_correctness_grid[fp16]"}
    assert len(others) == 4 and all(t.status == "passed" for t in others.values()), [(n, t.reason) for n, t in others.items()]


@cuda
def test_gpu_out_of_memory_costs_only_its_test(submission):
    hog = "    if key.dtype == torch.bfloat16:\n        torch.empty(2**46, dtype=torch.uint8, device=key.device)\n"
    sub = submission({"paged_attention/kernels.py": [("    _check_cache(key_cache, value_cache)\n    T, H, D = key.shape\n",
                                                      hog + "    _check_cache(key_cache, value_cache)\n    T, H, D = key.shape\n")]})
    result = run_assignment("paged_attention", sub, keyword=PA_GPU)
    tests = by_name(result)
    bad = tests["test_gpu_reshape_and_cache[bf16]"]
    assert bad.status == "failed" and "GPU out of memory" in bad.reason, bad.reason
    assert all(t.status == "passed" for n, t in tests.items() if n != "test_gpu_reshape_and_cache[bf16]")


@cuda
def test_launching_the_baseline_kernel_is_caught(submission):
    """A reshape_and_cache that also calls vLLM's kernel (through torch.ops, no import needed) fails
    its speed tests: the grader profiles one student call and looks for the baseline's kernels."""
    from autograder import baselines

    if not baselines.get("vllm.reshape_and_cache").available:
        pytest.skip("vLLM's kernels are not installed here")
    call = ("    one = torch.ones((), dtype=torch.float32, device=key.device)\n"
            "    torch.ops._C_cache_ops.reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, 'auto', one, one)\n")
    sub = submission({"paged_attention/kernels.py": [("    _check_cache(key_cache, value_cache)\n    T, H, D = key.shape\n",
                                                      "    _check_cache(key_cache, value_cache)\n    T, H, D = key.shape\n" + call)]})
    result = run_assignment("paged_attention", sub, keyword="speed_vs_vllm_reshape_and_cache")
    assert len(result.tests) == 2
    for t in result.tests:
        assert t.status == "failed" and "launched the baseline's kernel" in t.reason, t.reason


def test_zero_ranks_have_the_same_guards(submission):
    """ZeRO's ranks are spawned processes that run the submission: importing DeepSpeed there is
    refused too, and the rank's error is the test's reason."""
    sub = submission({"zero/engine.py": [("    def step(self) -> None:\n",
                                          "    def step(self) -> None:\n        import deepspeed  # noqa: F401\n")]})
    result = run_assignment("zero", sub, keyword="test_matches_single_process_adamw and 1-2")
    assert len(result.tests) == 1 and result.tests[0].status == "failed", [t.reason for t in result.tests]
    assert "may not import deepspeed" in result.tests[0].reason, result.tests[0].reason
