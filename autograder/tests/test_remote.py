"""The worker protocol on its own: what crosses the boundary, and what a lying worker cannot do.

These drive autograder/remote/ directly (a sandboxed worker serving the reference), and feed the
trusted side's decoder frames a hostile worker could send.
"""
import os
import socket
import threading
import time

import pytest
import torch

from autograder import REPO_ROOT, timing
from autograder.remote import client
from autograder.remote.protocol import Codec, ProtocolError, SharedBuffer, recv_frame, send_frame, strided_view


@pytest.fixture
def worker():
    client.configure(REPO_ROOT / "solutions")
    client.begin_test(120)
    yield client.current()
    client.shutdown()


def run(conn, code: str):
    """Execute code in the worker's builtins (a stand-in for submission code)."""
    return conn.import_module("builtins").exec(code, {})


def evaluate(conn, expr: str):
    return conn.import_module("builtins").eval(expr)


def test_values_arrive_as_exact_builtin_types_and_plain_tensors(worker):
    got = evaluate(worker, "(lambda t: [1, 2.5, 'x', None, True, (3,), {'k': 4}, {5}, b'ab', t.float32,"
                           " t.ones(2, 3), t.nn.Parameter(t.zeros(2))])(__import__('torch'))")
    assert [type(v) for v in got[:9]] == [int, float, str, type(None), bool, tuple, dict, set, bytes]
    assert got[9] is torch.float32
    assert type(got[10]) is torch.Tensor and torch.equal(got[10], torch.ones(2, 3))
    assert type(got[11]) is torch.Tensor  # a Parameter crosses as its data


def test_lying_subclasses_do_not_cross(worker):
    run(worker, "import torch\n"
                "class Yes(int):\n    def __eq__(self, o): return True\n"
                "class T(torch.Tensor):\n"
                "    def __eq__(self, o): return True\n    def __bool__(self): return True\n"
                "import builtins\nbuiltins.yes = Yes(3)\nbuiltins.tt = torch.zeros(3).as_subclass(T)")
    yes = evaluate(worker, "yes")
    assert type(yes) is not int and yes != 3, "an int subclass must stay a handle, never equal by its own rules"
    tt = evaluate(worker, "tt")
    assert type(tt) is torch.Tensor and torch.equal(tt, torch.zeros(3)) and not (tt == 1).any()
    with pytest.raises(Exception):  # a tensor whose every torch function lies cannot even be read out
        run(worker, "import builtins, torch\nclass L(torch.Tensor):\n    @classmethod\n"
                    "    def __torch_function__(cls, f, types, args=(), kwargs=None): return True\n"
                    "builtins.liar = torch.zeros(3).as_subclass(L)")
        evaluate(worker, "liar")


def test_outcome_exceptions_become_failures(worker):
    for code, name in [("import pytest; pytest.skip('not graded here (no GPU)')", "Skipped"),
                       ("import pytest; pytest.xfail('later')", "XFailed"),
                       ("raise SystemExit(0)", "SystemExit"), ("raise KeyboardInterrupt", "KeyboardInterrupt")]:
        with pytest.raises(client.SubmissionError, match=name):
            run(worker, code)
    with pytest.raises(Exception) as e:  # pytest.exit's class derives from Exception: a local class, a failure
        run(worker, "import pytest; pytest.exit('bye')")
    assert type(e.value).__module__ == "submission"
    with pytest.raises(KeyError):  # built-in exceptions keep their class
        evaluate(worker, "{}['missing']")


def test_submission_exception_classes_are_local_and_catchable(worker):
    bp = worker.import_module("block_manager.block_pool")
    with pytest.raises(bp.BlockPoolError):
        bp.BlockPool(2).get_new_blocks(3)
    assert bp.BlockPoolError.__module__ == "submission"


def test_mirrors_show_the_workers_writes_only_at_call_boundaries(worker):
    run(worker, "import builtins, threading, time\n"
                "def fill(t):\n    t.fill_(7)\n    builtins.kept = t\n"
                "def later():\n    time.sleep(0.3)\n    builtins.kept.fill_(9)\n"
                "builtins.fill, builtins.later = fill, later")
    t = client.writable(torch.zeros(4))
    evaluate(worker, "fill")(t)
    assert torch.equal(t, torch.full((4,), 7.0)), "an in-place write of the call shows when it returns"
    run(worker, "import threading; threading.Thread(target=later).start()")

    time.sleep(0.6)
    assert torch.equal(t, torch.full((4,), 7.0)), "between calls the worker cannot change the test's memory"


def test_inputs_are_read_only_unless_declared_writable(worker):
    """A write into a tensor the test did not declare writable fails the call, and the test's
    tensor keeps its value: no reference is computed from inputs the submission changed."""
    t, out = torch.arange(4.0), client.writable(torch.zeros(4))
    fill = evaluate(worker, "lambda src, dst: (dst.copy_(src * 2), src.zero_())")
    with pytest.raises(client.InputModified, match=r"wrote into a tensor it was given as an input \(\[4\] float32"):
        fill(t, out)
    assert torch.equal(t, torch.arange(4.0)), "the read-only input keeps its value"
    assert torch.equal(out, torch.arange(4.0) * 2), "the writable output takes the call's writes"
    evaluate(worker, "lambda src: src.sum()")(t)  # a read alone is fine, and the mirror holds t again


def test_views_of_a_mirror_come_back_as_views(worker):
    t = torch.zeros(6)
    v = evaluate(worker, "lambda t: t[2:5]")(t)
    assert v.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() and v.storage_offset() == 2


def test_a_dead_worker_fails_the_call_and_says_how(worker):
    with pytest.raises(client.WorkerError, match="exit code 3"):
        run(worker, "import os; os._exit(3)")


# ----------------------------------------------------------------------------- hostile frames

def _decode(value, blob=b""):
    return Codec(lambda o: None, lambda m: m).decode(value, blob)


@pytest.mark.parametrize("value", [
    {"X": {"dt": "float32", "s": [4], "_o": 0, "n": 8}},          # data shorter than the shape
    {"X": {"dt": "object", "s": [1], "_o": 0, "n": 8}},           # no such dtype
    {"X": {"dt": "float32", "s": [-1], "_o": 0, "n": 0}},         # negative shape
    {"B": True, "_o": 4, "n": 100},                                # a blob past the end
    {"Z": 1},                                                      # unknown tag
    [1, 2],                                                        # a bare JSON list is not a value
])
def test_malformed_values_are_refused(value):
    with pytest.raises(ProtocolError):
        _decode(value, b"\0" * 8)


def test_a_view_cannot_reach_outside_its_buffer():
    u8 = torch.zeros(64, dtype=torch.uint8)
    assert strided_view(u8, torch.float32, 0, [4, 4], [4, 1]).numel() == 16
    for offset, shape, stride in [(1, [4, 4], [4, 1]), (0, [5, 4], [4, 1]), (0, [2], [-1]), (-1, [1], [1]),
                                  (0, [2, 2], [40, 1])]:
        with pytest.raises(ProtocolError):
            strided_view(u8, torch.float32, offset, shape, stride)


def test_oversized_frames_are_refused_before_reading():
    a, b = socket.socketpair()
    threading.Thread(target=send_frame, args=(a, {"ok": None}, [b"x" * 100]), daemon=True).start()
    with pytest.raises(ProtocolError, match="too large"):
        recv_frame(b, max_blobs=10)
    a.close()
    b.close()


def test_shared_buffers_check_their_size():
    buf = SharedBuffer(16)
    assert buf.bytes.numel() == 16
    fd = os.memfd_create("small")
    os.ftruncate(fd, 4)
    with pytest.raises(ProtocolError):
        SharedBuffer(16, fd)


def test_a_script_runs_a_whole_program_in_one_request(worker):
    """The block_manager speed test's path: the churn program as one `script` request, answered
    with every allocated block id; the reference's answer is exactly the free queue's order."""
    from autograder.fixtures.churn import as_script, check_ids, expected_ids, make_ops

    import array

    ops = make_ops(3000, 64, seed=7)
    pool = worker.import_module("block_manager.block_pool").BlockPool(64, enable_caching=False)
    methods, steps = as_script(ops)
    raw = worker.request("script", handle_id=object.__getattribute__(pool, "_r_id"), methods=methods, steps=steps,
                         pluck={"get_new_blocks": "block_id"})
    ids = array.array("q", raw).tolist()
    assert ids == expected_ids(ops, list(range(64)))
    assert check_ids(ops, ids, set(range(64))) is None
    assert check_ids(ops, [64] + ids[1:], set(range(64))) is not None, "an id outside the pool is not a valid run"


def test_a_bench_loop_runs_its_calls_in_the_worker(worker):
    """The kernel speed harness's path without a GPU: `bench` prepares a loop over mirrored
    tensors (a Python loop here: no CUDA graph on CPU), `bench_run` runs it."""
    fn = evaluate(worker, "lambda x, out: out.copy_(x * 2)")
    x, out = torch.arange(6.0).view(3, 2), client.writable(torch.full((3, 2), float("nan")))
    reply = worker.request("bench", handle_id=object.__getattribute__(fn, "_r_id"),
                           calls=[((x[i],), {"out": out[i]}) for i in range(3)], graph=True)
    assert reply["graph"] is False and type(reply["id"]) is int
    out.fill_(float("nan"))
    worker.request("bench_run", bench=reply["id"])
    assert torch.equal(out, x * 2)
    # the same through timing.worker_loop, which the kernel speed tier (timing.Loop) and the free
    # queue's O(1) test use
    run, in_graph, _ = timing.worker_loop(fn, [((x[i],), {"out": out[i]}) for i in range(3)], "a loop")
    out.fill_(float("nan"))
    run()
    assert in_graph is False and torch.equal(out, x * 2)


def test_transformers_models_stay_out_of_reach_without_the_finder(worker):
    """The worker's import finder refuses transformers' model files, but it lives in the
    submission's process, which can remove it. Under bubblewrap those files read as empty: with
    the finder gone, importing one still gives no model (and its cached bytecode is empty too)."""
    from autograder.remote.isolation import baseline_files, choose

    if choose().level != "bubblewrap":
        pytest.skip(f"isolation {choose().level}: only bubblewrap hides single files")
    if not baseline_files():
        pytest.skip("transformers is not installed")
    run(worker, "import builtins, sys, importlib, importlib.util\n"
                "def probe():\n"
                "    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_BlockBaselines']\n"
                "    spec = importlib.util.find_spec('transformers.models.llama.modeling_llama')\n"
                "    size = len(open(spec.origin, 'rb').read())\n"
                "    m = importlib.import_module('transformers.models.llama.modeling_llama')\n"
                "    return [size, hasattr(m, 'LlamaForCausalLM')]\n"
                "builtins.probe = probe")
    assert evaluate(worker, "probe")() == [0, False]
