"""The grader against submissions that attack it (issue 15), and against broken ones.

Graded suites run submission code only in a sandboxed worker (autograder/remote/); the test
process, which the worker cannot reach, decides the grade. Each attack is a file in attacks/
(see attacks/README.md), appended to one module of the stubs (assignments/: honestly 0 points)
or of the reference (solutions/: honestly full marks). Graded, it must gain no point over the
honest score, and the grader must stay intact: every test still listed with its points, the
tests it does not touch graded as usual, nothing of it left running.

Several attacks that target different tests share one graded run (a module fixture), and each
class of attack has its own test function reading that run. An attack that finds nothing to
use raises "attack report: ..." with what it saw, so a test can check the attack really ran.

Not covered here, still in-process behind the legacy guards (docs/grading.md): the `zero`
assignment. The speed tier's attacks run on a GPU machine (the `cuda` marker).
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.impl import copy_tree
from autograder.runner import collect, run_assignment

ATTACKS = Path(__file__).with_name("attacks")
CACHE, ATTN = "kv_cache/kv_cache.py", "kv_cache/attention.py"
# 3 repeat_kv + 6 attend + append + reset + overflow + bytes: every kv_cache file a stub fails
K13 = "repeat_kv or attend_matches or append_prefill or reset_forgets or overflow or bytes_real"


def build(root: Path, base: str, attacks: dict[str, list[str]], settings: dict[str, str] | None = None) -> Path:
    """Copy `base` (assignments: the stubs, or solutions: the reference) to `root`, and append to
    each module the attack files named for it, then `settings` (values only the test knows)."""
    copy_tree(REPO_ROOT / base, root)
    for rel, names in attacks.items():
        f = root / rel
        text = f.read_text() + "".join((ATTACKS / f"{n}.py").read_text() for n in names)
        f.write_text(text + (settings or {}).get(rel, ""))
    return root


def by_name(result) -> dict:
    return {t.nodeid.split("::")[-1]: t for t in result.tests}


def pick(result, pattern: str) -> list:
    return [t for t in result.tests if re.search(pattern, t.nodeid.split("::")[-1])]


@functools.lru_cache(maxsize=None)
def graded_max(keyword: str) -> tuple[int, float]:
    """(tests, points) of the kv_cache suite under -k `keyword`, from the grader's own collection."""
    tests = collect("kv_cache", keyword)
    return len(tests), sum(float(t["points"]) for t in tests)


def assert_graded_in_full(result, keyword: str) -> None:
    """Every test the grader collected has a result that is a pass or a fail (no 'not graded
    here', nothing missing, nothing added), worth the points the grader gives it."""
    n, points = graded_max(keyword)
    assert len(result.tests) == n, [t.nodeid for t in result.tests]
    assert sum(t.max_score for t in result.tests) == points
    assert all(t.status in ("passed", "failed") for t in result.tests), \
        [(t.nodeid, t.status, t.reason) for t in result.tests]
    assert not any("rejected" in n for n in result.notes), result.notes


def assert_stub_score(result) -> None:
    """Honestly, the stubs score 0 on every test."""
    assert all(t.status == "failed" and t.score == 0 for t in result.tests), \
        [(t.nodeid, t.status, t.score, t.reason) for t in result.tests if t.score or t.status != "failed"]


def _alive(pattern: str) -> list[int]:
    """Live processes on this machine whose command line matches (from /proc: no pgrep needed)."""
    from autograder.sandbox import _cmdline, proc_stats

    return [st.pid for st in proc_stats() if st.state != b"Z" and re.search(pattern, _cmdline(st.pid))]


# ============================================================================ the stubs, snooping
# One run of the stubs with four attacks, each on its own tests:
#   steal_key_and_channel  kv_cache_bytes   (class 1: the key and the channel)
#   replace_the_grader     attend           (class 2: checkers, reporter, tests, plugins, pytest.skip)
#   read_the_reference     repeat_kv        (class 5: the reference, the tests, the grader's output)
#   network_and_writes     KVCache          (class 7: network, writes outside /tmp)

@pytest.fixture(scope="module")
def snooping(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snooping")
    out = tmp / "out"  # stands for the grader's --out folder: its logs go there
    out.mkdir()
    (out / "grade.json").write_text('{"secret": "earlier results"}')
    secret = tmp / "secret.txt"
    secret.write_text("a file of the grading machine's")
    host_files = [str(p) for p in (Path("/root/.bashrc"), Path("/root/.profile"), Path("/etc/shadow")) if p.exists()]
    reads = [str(secret), str(out / "grade.json"), str(REPO_ROOT / "solutions/kv_cache/attention.py"), *host_files]
    writes = [str(out / "grade.json"), str(out / "planted"), str(tmp / "planted"), str(REPO_ROOT / "planted"),
              str(REPO_ROOT / "solutions/kv_cache/planted.py")]
    sub = build(tmp / "submission", "assignments",
                {ATTN: ["read_the_reference", "replace_the_grader"],
                 CACHE: ["steal_key_and_channel", "network_and_writes"]},
                {ATTN: f"\nEXTRA_PATHS = {reads!r}\n", CACHE: f"\nEXTRA_PATHS = {writes!r}\n"})
    before = {p: Path(p).read_bytes() for p in reads if Path(p).is_file()}
    own = (sub / CACHE).read_bytes()
    result = run_assignment("kv_cache", sub, keyword=K13, log_dir=out / "logs")
    return {"result": result, "sub": sub, "own": own, "out": out, "tmp": tmp, "before": before}


def test_key_and_channel_are_out_of_reach(snooping):
    """Class 1. The worker's environment, /proc (its own, its parent's, every pid it can see), gc
    and its file system hold no key and no channel; the records it forges (on stdout, stderr)
    are never read; no test is added and no score moves."""
    result = snooping["result"]
    assert_graded_in_full(result, K13)
    assert_stub_score(result)
    [t] = pick(result, "bytes_real")
    assert "attack report: keys=[] channels=[] grader_modules=[] wrote=[]" in t.reason, t.reason
    assert not any("bonus" in x.nodeid for x in result.tests)


def test_checkers_reporter_and_tests_cannot_be_replaced(snooping):
    """Class 2. The worker cannot import the grader, finds none of its functions through gc or
    its call stack (which ends in the worker's protocol loop), and no plugin manager; its
    `pytest.skip("not graded here (no GPU)")` fails the test instead of shrinking the maximum."""
    result = snooping["result"]
    attend = pick(result, "attend_matches")
    assert len(attend) == 6 and all(t.status == "failed" and t.score == 0 for t in attend)
    decode = [t for t in attend if "decode" in t.nodeid]
    assert len(decode) == 2 and all("SubmissionError" in t.reason and "Skipped" in t.reason for t in decode), \
        [t.reason for t in decode]
    for t in attend:
        if t not in decode:
            assert "attack report: grader_imports=[] replaced=[] plugins=0" in t.reason, t.reason
            assert "protocol.py" in t.reason and "test_attention" not in t.reason, t.reason


def test_reference_tests_and_results_are_invisible(snooping):
    """Class 5. open(), `cat`, libc open through ctypes, os.open with dir_fd and a thread with a
    fake file name all fail on the reference, the suites, the grader's --out folder, a file under
    the test's tmp_path and /root's files: none of them is in the sandbox. Of the repository the
    worker sees only the Python environment, the course library and the model data."""
    result = snooping["result"]
    repeat = pick(result, "repeat_kv")
    assert len(repeat) == 3
    for t in repeat:
        assert t.status == "failed" and t.score == 0, t.reason
        assert "attack report: read=[] tries=" in t.reason, t.reason
        listing = re.search(r"repo_listing=(\{.*\})", t.reason).group(1)
        assert not re.search(r"'(solutions|autograder|assignments|\.git|docs)'", listing), listing
    for p, data in snooping["before"].items():
        assert Path(p).read_bytes() == data, f"{p} changed"


def test_no_network_and_no_writes_outside_tmp(snooping):
    """Class 7. No route out (TCP, UDP, DNS, the host's loopback and abstract sockets); writes
    succeed only in the worker's own /tmp: not in the submission, the repository, the Python
    environment, /root, /etc, the grader's --out folder or anywhere on the host."""
    result = snooping["result"]
    cache_tests = pick(result, "append_prefill|reset_forgets|overflow")
    assert len(cache_tests) == 3
    for t in cache_tests:
        assert t.status == "failed" and t.score == 0, t.reason
        m = re.search(r"attack report: network=(\[.*?\]) wrote=(\[.*?\])", t.reason)
        assert m, t.reason
        assert m.group(1) == "[]", t.reason
        # the worker's /tmp and /dev/shm are its own (tmpfs mounts of the sandbox, gone with it)
        assert all(p.startswith(("/tmp/", "/dev/shm/")) for p in eval(m.group(2))), t.reason  # noqa: S307 - our own list
        assert "'/tmp/scratch.txt'" in m.group(2), t.reason  # the attack did run its writes
    out, tmp = snooping["out"], snooping["tmp"]
    assert (out / "grade.json").read_text() == '{"secret": "earlier results"}'
    assert not any(p.exists() for p in (out / "planted", tmp / "planted", REPO_ROOT / "planted",
                                        Path("/dev/shm/planted"), Path("/tmp/scratch.txt"),
                                        REPO_ROOT / "solutions/kv_cache/planted.py",
                                        snooping["sub"] / "kv_cache/planted.py"))
    assert (snooping["sub"] / CACHE).read_bytes() == snooping["own"]


# ============================================================================ the stubs, lying

def test_lying_values_are_checked_as_plain_data(tmp_path):
    """Class 3. An int whose == is always true, a torch.Tensor subclass whose __torch_function__
    says yes to every comparison, torch's own comparisons patched in the worker, objects whose
    __eq__, __bool__, __len__, __iter__ and __repr__ misbehave: what crosses to the grader is an
    exact int or a fresh torch.Tensor (their class stays behind) or a handle compared by
    identity, checked by the grader's own torch. The stubs still score 0, each test with the
    grader's own reason."""
    sub = build(tmp_path / "submission", "assignments", {CACHE: ["lying_numbers_and_objects"], ATTN: ["lying_tensors"]})
    result = run_assignment("kv_cache", sub, keyword=K13)
    assert_graded_in_full(result, K13)
    assert_stub_score(result)
    tests = by_name(result)
    assert "needs 128 KiB per token" in tests["test_kv_cache_bytes_real_models"].reason
    assert "a new cache must have length 0" in tests["test_append_prefill_then_decode"].reason
    # unpacking append's result asks the worker to list it: its __len__ (2**70) fails there
    assert "OverflowError" in tests["test_overflow_raises_and_leaves_cache_unchanged"].reason
    for t in pick(result, "repeat_kv"):
        assert "must read KV head" in t.reason, t.reason
    for t in pick(result, "attend_matches"):
        assert "elements differ" in t.reason, t.reason


# ============================================================================ the reference, escaping its outcome

def test_skip_xfail_exit_interrupt_and_exit_fail_only_their_test(tmp_path):
    """Class 4. pytest.skip("not graded here (no GPU)"), pytest.xfail, pytest.exit,
    KeyboardInterrupt, SystemExit and os._exit raised by the reference in six tests: each fails
    that test with what was raised, the graded maximum is unchanged, and every other test
    (repeat_kv[4] after SystemExit and os._exit, the formula tests after pytest.exit and
    KeyboardInterrupt) still runs and passes."""
    sub = build(tmp_path / "submission", "solutions",
                {CACHE: ["escape_outcome_cache"], ATTN: ["escape_outcome_attention"]})
    keyword = "repeat_kv or append_prefill or reset_forgets or overflow or bytes_real or formula_equals"
    result = run_assignment("kv_cache", sub, keyword=keyword)
    assert_graded_in_full(result, keyword)
    tests = by_name(result)
    raised = {"test_repeat_kv_head_mapping[1]": "SystemExit", "test_repeat_kv_head_mapping[2]": "died",
              "test_append_prefill_then_decode": "Skipped", "test_reset_forgets_everything": "XFailed",
              "test_overflow_raises_and_leaves_cache_unchanged": "KeyboardInterrupt",
              "test_kv_cache_bytes_real_models": "Exit"}
    for name, what in raised.items():
        t = tests[name]
        assert t.status == "failed" and t.score == 0 and what in t.reason, (name, t.status, t.reason)
    honest = {n: t for n, t in tests.items() if n not in raised}
    assert len(honest) == 3 and all(t.status == "passed" and t.score == t.max_score for t in honest.values()), \
        [(n, t.reason) for n, t in honest.items() if t.status != "passed"]
    assert result.error == "" and result.restarts == 0, (result.error, result.restarts)


# ============================================================================ processes and memory

def test_nothing_the_submission_starts_outlives_its_test(tmp_path):
    """Class 6. A non-daemon thread, a grandchild in a new session and a double-forked daemon left
    by the append test, two children (one ignoring SIGTERM) left by the reset test: none is there
    when the overflow test starts (it looks for them and would fail), none is on this machine
    after grading, and grading does not wait for them. The reference's score is unchanged."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["leave_processes_running"]})
    t0 = time.time()
    result = run_assignment("kv_cache", sub, keyword="append_prefill or reset_forgets or overflow or bytes_real")
    assert len(result.tests) == 4
    assert all(t.status == "passed" and t.score == t.max_score for t in result.tests), \
        [(t.nodeid, t.reason) for t in result.tests if t.status != "passed"]
    assert not _alive(r"sleep 410[1-4]|# leftover"), "leftover processes must be killed"
    assert time.time() - t0 < 40, "grading must not wait for the thread"


def test_host_memory_of_the_worker_and_of_its_new_session_children_is_counted(tmp_path):
    """Class 6, and the old host-memory test. The append test's worker keeps allocating; the reset
    test's worker starts a child in a new session that holds the memory: both are killed at the
    limit (here 2 GB) and charged; the test after them passes."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["hold_memory"]},
                {CACHE: f"\nHOG_BYTES = {2 << 30}\nMODES = {{'grow', 'child'}}\n"})
    result = run_assignment("kv_cache", sub, keyword="append_prefill or reset_forgets or bytes_real", host_memory_gb=2)
    tests = by_name(result)
    for name in ("test_append_prefill_then_decode", "test_reset_forgets_everything"):
        t = tests[name]
        assert t.status == "failed" and "host out of memory" in t.reason and "2.0 GB limit" in t.reason, \
            (name, t.reason)
    assert tests["test_kv_cache_bytes_real_models"].status == "passed", tests["test_kv_cache_bytes_real_models"].reason


def test_host_memory_held_in_a_memfd_is_counted(tmp_path):
    """Class 6. The worker holds 2 GB in an anonymous memfd it never maps: over the 2 GB limit with
    the rest of the suite, so the test must be killed and charged like any other host memory."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["hold_memory"]},
                {CACHE: f"\nHOG_BYTES = {2 << 30}\nMODES = {{'memfd'}}\n"})
    result = run_assignment("kv_cache", sub, keyword="overflow or bytes_real", host_memory_gb=2)
    tests = by_name(result)
    assert tests["test_kv_cache_bytes_real_models"].status == "passed"
    t = tests["test_overflow_raises_and_leaves_cache_unchanged"]
    assert t.status == "failed" and "host out of memory" in t.reason, t.reason


def test_a_process_that_looks_like_a_zombie_does_not_outlive_its_test(tmp_path):
    """Class 6. The reset test forks a child that starts a thread and ends its main thread alone:
    alive, but a zombie to /proc/<pid>/stat. The overflow test, next, must not find it running."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["hide_as_a_zombie"]})
    result = run_assignment("kv_cache", sub, keyword="reset_forgets or overflow")
    t = by_name(result)["test_overflow_raises_and_leaves_cache_unchanged"]
    assert t.status == "passed", t.reason


# ============================================================================ broken submissions

def test_crashes_cost_only_their_test(tmp_path):
    """A segfault, os._exit(3), SIGKILL and an endless loop in four tests of the reference: each
    fails its test (the worker died, or timed out), a fresh sandbox serves the next test, and the other tests
    (the two formula tests after all four) pass."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["crashes"]})
    keyword = "repeat_kv or append_prefill or reset_forgets or overflow or bytes_real or formula_equals"
    result = run_assignment("kv_cache", sub, keyword=keyword, per_test_timeout=15)
    assert_graded_in_full(result, keyword)
    tests = by_name(result)
    # the zygote reaps its workers and tells the grader how each ended
    reasons = {"test_append_prefill_then_decode": "segmentation fault (SIGSEGV)",
               "test_reset_forgets_everything": "exit code 3",
               "test_overflow_raises_and_leaves_cache_unchanged": "killed (SIGKILL)",
               "test_kv_cache_bytes_real_models": "timed out"}
    for name, what in reasons.items():
        t = tests[name]
        assert t.status == "failed" and t.score == 0 and what in t.reason, (name, t.reason)
    others = {n: t for n, t in tests.items() if n not in reasons}
    assert len(others) == 5 and all(t.status == "passed" for t in others.values()), \
        [(n, t.reason) for n, t in others.items() if t.status != "passed"]


@pytest.fixture(scope="module")
def wrong_outputs(tmp_path_factory):
    sub = build(tmp_path_factory.mktemp("wrong") / "submission", "solutions",
                {ATTN: ["wrong_outputs"], CACHE: ["nan_number"]})
    return by_name(run_assignment("kv_cache", sub, keyword="attend_matches or append_prefill or bytes_real"))


@pytest.mark.parametrize("test,reason", [
    ("test_attend_matches_reference[fp32-decode]", "NaN/inf"),
    ("test_attend_matches_reference[bf16-decode]", "NaN/inf"),
    ("test_attend_matches_reference[fp32-chunk]", "the second call returned the same memory as the first"),
    # a write into q is stopped at the boundary (client.InputModified), before the checks after the call
    ("test_attend_matches_reference[bf16-chunk]", "wrote into a tensor it was given as an input"),
    ("test_attend_matches_reference[fp32-prefill]", "wrote into a tensor it was given as an input"),
    ("test_attend_matches_reference[bf16-prefill]", "host out of memory (MemoryError"),
    ("test_kv_cache_bytes_real_models", "128 KiB per token"),
], ids=["nan", "inf", "cached_output", "mutates_input", "aliases_input", "memory_error", "nan_number"])
def test_wrong_output_scores_zero_with_its_reason(wrong_outputs, test, reason):
    """Plausible wrong answers, one per attend test (see attacks/wrong_outputs.py), and a byte count
    that is NaN: each fails with a reason that names it; the untouched append test passes. (A
    result crosses by value, with the worker storage it came from, kept alive while the copy is:
    a buffer returned twice is seen by checks.assert_not_reused.)"""
    assert wrong_outputs["test_append_prefill_then_decode"].status == "passed"
    t = wrong_outputs[test]
    assert t.status == "failed" and t.score == 0 and reason in t.reason, t.reason


def test_syntax_error_fails_each_test_with_file_and_line(tmp_path):
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["syntax_error"]})
    result = run_assignment("kv_cache", sub, keyword="repeat_kv or append_prefill or bytes_real")
    assert len(result.tests) == 5 and all(t.status == "failed" for t in result.tests)
    assert all("SyntaxError" in t.reason and "kv_cache.py:" in t.reason for t in result.tests), result.tests[0].reason
    assert result.error == "" and result.restarts == 0


def test_printing_a_flood_is_harmless(tmp_path):
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["flood_output"]})
    result = run_assignment("kv_cache", sub, keyword="append_prefill", log_dir=tmp_path / "logs")
    assert result.tests[0].status == "passed", result.tests[0].reason
    assert (tmp_path / "logs" / "kv_cache.log").stat().st_size < 2_000_000


def test_suite_time_limit_stops_the_assignment_not_the_grader(tmp_path):
    """Each test slow but under its own limit: the assignment's limit stops the suite; what did not
    run says why and scores 0."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["slow_everywhere"]})
    result = run_assignment("kv_cache", sub, per_test_timeout=60, suite_timeout=12,
                            keyword="append_prefill or bytes_real or repeat_kv")
    assert "ran past its 12 s limit" in result.error, result.error
    assert all(t.status == "failed" and t.score == 0 for t in result.tests if "append" in t.nodeid)
    assert any(t.reason.startswith("not run") or "12 s limit" in t.reason for t in result.tests)


def test_one_broken_assignment_leaves_the_others_graded(tmp_path):
    """kv_cache ends its worker at import (os._exit in the module body); block_manager, graded by
    the same command, is graded in full."""
    sub = build(tmp_path / "submission", "solutions", {CACHE: ["exit_at_import"]})
    r = subprocess.run([sys.executable, "-m", "autograder", "grade", "kv_cache", "block_manager", "--impl", str(sub),
                        "--out", str(tmp_path / "out"), "-q",
                        "-k", "bytes_real or append_prefill or chained or slot_mapping"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "grade.json").read_text())
    by_assignment = {a["name"]: a for a in report["assignments"]}
    kv, bm = by_assignment["kv_cache"], by_assignment["block_manager"]
    assert len(kv["tests"]) == 2 and all(t["status"] == "failed" and t["score"] == 0 for t in kv["tests"])
    assert all("died" in t["reason"] for t in kv["tests"]), kv["tests"]
    assert [t["status"] for t in bm["tests"]] == ["passed", "passed"], \
        "block_manager must be graded as if nothing happened"


# ============================================================================ ZeRO's ranks

def test_zero_ranks_are_sandboxed_and_measured_from_outside(tmp_path):
    """ZeRO's ranks are workers in the sandbox: an engine that keeps a hidden fp32 copy of the model
    and blinds the in-process meters of old (gc, torch.distributed's wrappers) is measured from
    outside (resident memory of each rank) and loses every memory test; its training is still
    right, so the stage tests pass; the grader cannot be imported from a rank."""
    sub = build(tmp_path / "submission", "solutions", {"zero/engine.py": ["forge_zero_meters"]})
    result = run_assignment("zero", sub, keyword="memory_per_rank or (single_process_adamw and 1-2)")
    tests = by_name(result)
    assert tests["test_matches_single_process_adamw[1-2]"].status == "passed", \
        tests["test_matches_single_process_adamw[1-2]"].reason
    for stage in range(4):
        t = tests[f"test_memory_per_rank[{stage}]"]
        assert t.status == "failed" and "more after backward" in t.reason, t.reason


def test_zero_state_hidden_in_files_or_helper_processes_is_seen(tmp_path):
    """A rank that keeps state in /dev/shm (memory, but not the rank's) or in a process it started
    fails the memory tests with those reasons; the training itself still passes."""
    sub = build(tmp_path / "submission", "solutions", {"zero/engine.py": ["hide_zero_state_outside_the_rank"]})
    result = run_assignment("zero", sub, keyword="memory_per_rank")
    for stage in range(4):
        t = by_name(result)[f"test_memory_per_rank[{stage}]"]
        assert t.status == "failed" and ("started other processes" in t.reason or "wrote" in t.reason), t.reason


def test_zero_ranks_cannot_import_deepspeed(submission):
    """DeepSpeed is the baseline: a rank that imports it fails its test with the rule's reason."""
    sub = submission({"zero/engine.py": [("    def step(self) -> None:\n",
                                          "    def step(self) -> None:\n        import deepspeed  # noqa: F401\n")]})
    result = run_assignment("zero", sub, keyword="test_matches_single_process_adamw and 1-2")
    assert len(result.tests) == 1 and result.tests[0].status == "failed", [t.reason for t in result.tests]
    assert "may not import deepspeed" in result.tests[0].reason, result.tests[0].reason


# ============================================================================ GPU faults (run on a GPU machine)

cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                          reason="needs a CUDA GPU (run on the GPU machine)")
WILD = ("@triton.jit\ndef _wild_store(p):\n    tl.store(p + 2**36, 1.0)\n\n\n"
        "def paged_attention_decode(")
PA_GPU = "gpu_correctness_grid or gpu_reshape_and_cache"


@cuda
def test_cuda_illegal_memory_access_costs_only_its_test(submission):
    """fp16 decode stores far out of bounds: that test fails with the reason, the worker is
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
    assert len(others) == 4 and all(t.status == "passed" for t in others.values()), \
        [(n, t.reason) for n, t in others.items()]


@cuda
def test_gpu_out_of_memory_costs_only_its_test(submission):
    hog = "    if key.dtype == torch.bfloat16:\n        torch.empty(2**46, dtype=torch.uint8, device=key.device)\n"
    start = "    _check_cache(key_cache, value_cache)\n    T, H, D = key.shape\n"
    sub = submission({"paged_attention/kernels.py": [(start, hog + start)]})
    result = run_assignment("paged_attention", sub, keyword=PA_GPU)
    tests = by_name(result)
    bad = tests["test_gpu_reshape_and_cache[bf16]"]
    assert bad.status == "failed" and "GPU out of memory" in bad.reason, bad.reason
    assert all(t.status == "passed" for n, t in tests.items() if n != "test_gpu_reshape_and_cache[bf16]")


SPEED_CASE = "speed_vs_vllm_paged_attention and b8-c4096-fp16"


def _speed_points(result) -> list[tuple[str, str, float, str]]:
    return [(t.nodeid.split("::")[-1], t.status, t.score, t.reason) for t in result.tests]


@cuda
@pytest.mark.parametrize("attack", ["speed_fake_clocks", "speed_side_stream", "speed_sampled_rows"])
def test_speed_tricks_gain_nothing(tmp_path, attack):
    """Class 9 (GPU): a slow or partial decode dressed up by lying clocks, a disabled
    synchronize(), a side stream nobody waits for, or computing only the rows the old check
    sampled. The clock, the copy of the outputs and the check are the trusted process's: each
    scores no speed point (the honest reference scores full marks on the same case)."""
    sub = build(tmp_path / "sub", "solutions", {"paged_attention/kernels.py": [attack]})
    result = run_assignment("paged_attention", sub, keyword=SPEED_CASE)
    if result.tests and result.tests[0].status == "not_graded":
        pytest.skip(f"no baseline here: {result.tests[0].reason}")
    assert len(result.tests) == 1, _speed_points(result)
    assert result.tests[0].score == 0, _speed_points(result)


@cuda
def test_launching_the_baseline_kernel_gains_nothing(tmp_path):
    """A reshape_and_cache that loads vLLM's op library by path and calls its kernel: the sandbox
    sees neither the library nor vLLM's package (bubblewrap: they are not bound, or hidden under
    an empty tmpfs), so both reshape_and_cache speed tests fail."""
    sub = build(tmp_path / "sub", "solutions", {"paged_attention/kernels.py": ["speed_baseline_kernel"]})
    result = run_assignment("paged_attention", sub, keyword="speed_vs_vllm_reshape_and_cache")
    if result.tests and all(t.status == "not_graded" for t in result.tests):
        pytest.skip(f"no baseline here: {result.tests[0].reason}")
    assert len(result.tests) == 2, _speed_points(result)
    for t in result.tests:
        assert t.status == "failed" and t.score == 0, _speed_points(result)
        assert "attack report: no vLLM op library visible" in t.reason, t.reason

# ============================================================================ answers that bend the check
# Found by a red-team pass (2026-11-27): tests that computed their reference after the call from
# tensors the submission could write, and a property test a manager could pass by doing nothing.

@pytest.mark.parametrize("assignment,module,attack,keyword", [
    ("paged_attention", "paged_attention/kernels.py", "mutate_inputs_paged_attention",
     "query_head or split_k_matches or dispatcher or writes_exactly"),
    ("kv_cache", ATTN, "mutate_inputs_attend", "attend_bf16"),
], ids=["paged_attention", "kv_cache"])
def test_inputs_changed_in_place_gain_nothing(tmp_path, assignment, module, attack, keyword):
    """Zeroing seq_lens (or v) and answering zeros, or turning every slot into padding: the test's
    tensors are read-only to the submission unless declared writable (client.writable), so each
    such call fails with InputModified and keeps the test's inputs as they were."""
    sub = build(tmp_path / "sub", "assignments", {module: [attack]})
    result = run_assignment(assignment, sub, keyword=keyword)
    assert result.tests, "the selection graded nothing"
    assert_stub_score(result)
    assert all("InputModified" in t.reason or "wrote into a tensor" in t.reason for t in result.tests), \
        [(t.nodeid, t.reason[:200]) for t in result.tests]


def test_a_manager_that_admits_nothing_gains_nothing(tmp_path):
    """allocate() always None with 'every block free': the property test now checks each refusal
    against the blocks the tables leave free, and that the pool holds its blocks."""
    sub = build(tmp_path / "sub", "assignments", {"block_manager/kv_cache_manager.py": ["refuse_every_admission"]})
    result = run_assignment("block_manager", sub, keyword="random_operation_sequences")
    assert len(result.tests) == 1
    assert_stub_score(result)


def test_resident_bytes_sees_a_memfd_reopened_read_only():
    """(ZeRO) State parked in a memfd, reopened read-only through /proc and unmapped, is out of the
    process's resident memory but still held: the census counts it (once, however many fds)."""
    import mmap
    import os

    from autograder.fixtures.ranks import resident_bytes

    pid, n = os.getpid(), 64 << 20
    before = resident_bytes(pid)
    fd = os.memfd_create("parked")
    os.ftruncate(fd, n)
    with mmap.mmap(fd, n) as m:
        m[:] = b"\x01" * n
    ro = [os.open(f"/proc/self/fd/{fd}", os.O_RDONLY) for _ in range(2)]
    os.close(fd)
    try:
        held = resident_bytes(pid) - before
        assert n <= held < 2 * n, f"{held / 2**20:.1f} MiB counted for a 64 MiB memfd held read-only twice"
    finally:
        for f in ro:
            os.close(f)


def test_a_wasteful_manager_with_a_faked_replay_gains_nothing(tmp_path):
    """A manager that reserves 512 slots ahead of every prompt, and a simulate.py that reports 99%:
    the replay that is graded is the grader's own, so the submission's copy is never called, and
    the manager's tables contradict the tokens the grader counted."""
    sub = build(tmp_path / "sub", "solutions",
                {"block_manager/kv_cache_manager.py": ["reserve_ahead_and_fake_the_replay"],
                 "block_manager/simulate.py": ["fake_replay"]})
    result = run_assignment("block_manager", sub, keyword="paged_memory_efficiency")
    assert len(result.tests) == 1 and result.tests[0].score == 0, [(t.nodeid, t.reason) for t in result.tests]
    assert "its block table has" in result.tests[0].reason, result.tests[0].reason


def test_an_engine_that_runs_transformers_gains_nothing(tmp_path):
    """No engine: the finder removed, transformers' model run for every request, the counters made
    up (scored 15/19 before). Under bubblewrap the model files are empty in the sandbox."""
    from autograder.remote.isolation import choose

    if choose().level != "bubblewrap":
        pytest.skip(f"isolation {choose().level}: only bubblewrap hides transformers' model files")
    sub = build(tmp_path / "sub", "assignments", {"engine/llm.py": ["engine_via_transformers"]})
    result = run_assignment("engine", sub, keyword="batch_of_ragged or eos_streaming")
    assert len(result.tests) == 2
    assert_stub_score(result)
    assert all("AutoModelForCausalLM" in t.reason for t in result.tests), [t.reason[:300] for t in result.tests]


def test_counters_made_up_over_one_request_at_a_time_gain_nothing(tmp_path):
    """The right tokens, one request at a time, with num_preemptions and the step stats made up
    (the tests read those before): the schedule checked on the grader's side shows no step with
    two sequences and no preemption."""
    sub = build(tmp_path / "sub", "solutions", {"engine/llm.py": ["one_request_at_a_time"]})
    result = run_assignment("engine", sub, keyword="batch_of_ragged or preemption_by_recompute")
    assert len(result.tests) == 2
    assert all(t.status == "failed" and t.score == 0 for t in result.tests), [(t.nodeid, t.reason[:200])
                                                                             for t in result.tests]
