"""Runs inside each graded suite's subprocess (loaded with `-p autograder.pytest_plugin`).

It reads points and tiers from markers, turns GPU tests into "not graded here (no GPU)" on
machines without CUDA, and sends one signed record per event to the grader:

    {"type": "collected", "tests": [{nodeid, name, points, tier}, ...]}
    {"type": "start", "nodeid": ...}
    {"type": "result", "nodeid": ..., "status": passed|failed|not_graded, "score", "max_score",
     "reason", "duration", "extra": {...}}

    {"type": "restart", "reason": ...}   (the CUDA context is broken: continue in a fresh process)

Records travel through a file whose path and HMAC key the grader passes in the environment;
stdout is never read for results.

Two modes (AUTOGRADER_MODE, set by the runner per pass):

* worker: this process is trusted. It never imports or runs submission code: `load()` hands the
  tests proxies of a sandboxed worker (autograder/remote/), a fresh one per test, killed with
  everything it started when the test ends. What the submission raises arrives as an ordinary
  exception (SystemExit, KeyboardInterrupt, pytest.skip/xfail/exit as SubmissionError), so it can
  only fail its test; "not graded here" is said only by the grader's own markers.
* inprocess (legacy, ZeRO and the speed tier until they move): submission code runs here, behind
  the guards of sandbox.py (imports, files, what a test leaves running); after every test the
  plugin checks that the checkers were not replaced and that the GPU is still usable. Its records
  are not trusted by the runner beyond the test list and points it collected itself.
"""
from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import random
import sys
import time

import pytest

from . import REPO_ROOT, sandbox
from .impl import ENV_VAR as IMPL_ENV, MODE_ENV

CHANNEL_ENV = "AUTOGRADER_CHANNEL"
KEY_ENV = "AUTOGRADER_KEY"
TIMEOUT_ENV = "AUTOGRADER_TEST_TIMEOUT"
TIERS_ENV = "AUTOGRADER_TIERS"  # the tiers this pass runs (empty: all); the others are listed, not run
NOT_GRADED_PREFIX = "not graded here"

_channel_path = os.environ.pop(CHANNEL_ENV, None)
_key = os.environ.pop(KEY_ENV, "").encode()
_channel = open(_channel_path, "a", buffering=1) if _channel_path else None  # noqa: SIM115
WORKER_MODE = os.environ.get(MODE_ENV) == "worker"
if WORKER_MODE:
    from .remote import client as _client

    _client.configure(os.environ.get(IMPL_ENV) or REPO_ROOT / "assignments")
    if "--collect-only" not in sys.argv:
        _client.prestart()  # the sandbox starts (python, torch, triton) while pytest collects
else:
    sandbox.install(os.environ.get(IMPL_ENV) or REPO_ROOT / "assignments", _channel_path)

# Triton kernels run in its interpreter where there is no GPU; it must be set before triton
# is first imported, which happens in student code.
try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except Exception:  # noqa: BLE001
    HAS_CUDA = False
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def sign(record: dict, key: bytes) -> str:
    body = json.dumps(record, sort_keys=True)
    return json.dumps({"rec": body, "sig": hmac.new(key, body.encode(), hashlib.sha256).hexdigest()})


def _send(record: dict) -> None:
    if _channel is not None:
        _channel.write(sign(record, _key) + "\n")
        _channel.flush()
        os.fsync(_channel.fileno())


def points_of(item) -> float:
    m = item.get_closest_marker("points")
    return float(m.args[0]) if m and m.args else 0.0


def tier_of(item) -> str:
    if item.get_closest_marker("speed"):
        return "speed"
    if item.get_closest_marker("gpu"):
        return "gpu"
    return "correctness"


def pytest_configure(config):
    if not WORKER_MODE:
        _GUARDED.update(_guarded())
    config.addinivalue_line("markers", "points(n): points this graded test is worth")
    config.addinivalue_line("markers", "gpu: needs CUDA")
    config.addinivalue_line("markers", "gpus(n): needs n GPUs (a multi-GPU tier)")
    config.addinivalue_line("markers", "speed: GPU speed test graded as a ratio")


_deferred: list = []  # collected, run by another pass of the runner


@pytest.hookimpl(trylast=True)  # after -k / -m / --deselect: defer only what this run selected
def pytest_collection_modifyitems(session, config, items):
    tiers = {t for t in os.environ.get(TIERS_ENV, "").split(",") if t}
    if tiers:
        _deferred.extend(i for i in items if tier_of(i) not in tiers)
        if _deferred:
            config.hook.pytest_deselected(items=list(_deferred))
            items[:] = [i for i in items if tier_of(i) in tiers]
    for item in items:
        if tier_of(item) != "correctness" and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason=f"{NOT_GRADED_PREFIX} (no GPU)"))
            continue
        gpus = item.get_closest_marker("gpus")
        if gpus and gpus.args and _gpu_count() < gpus.args[0]:
            item.add_marker(pytest.mark.skip(reason=f"{NOT_GRADED_PREFIX} (needs {gpus.args[0]} GPUs, this run has "
                                                    f"{_gpu_count()}; grade-all: --gpus-per-job {gpus.args[0]})"))


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if HAS_CUDA else 0


def _name(item) -> str:
    doc = getattr(item.function, "__doc__", None) if hasattr(item, "function") else None
    first = doc.strip().splitlines()[0] if doc and doc.strip() else ""
    return f"{item.name}: {first}" if first else item.name


class Grade:
    """What a test records beyond pass/fail: partial credit (speed tests) and figures.

    `grade.fraction(0.7, "0.91x vLLM")` gives 70% of the test's points if the test then
    passes; `grade.extra["ratio"] = ...` travels to the report and the leaderboard.
    """

    def __init__(self):
        self.frac: float | None = None
        self.detail = ""
        self.extra: dict = {}

    def fraction(self, value: float, detail: str = "") -> None:
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"fraction must be in [0, 1], got {value}")
        self.frac, self.detail = float(value), detail


@pytest.fixture
def grade(request) -> Grade:
    g = Grade()
    request.node._autograder_grade = g
    return g


_snapshot: sandbox.Snapshot | None = None
_restart_reason: str | None = None  # set when the CUDA context is unusable after a test


def pytest_runtest_logstart(nodeid, location):
    global _snapshot
    _send({"type": "start", "nodeid": nodeid, "time": time.time()})
    from . import checks

    checks.begin_test(nodeid)
    # what a test draws without its own generator comes from the run's seed too (torch's default
    # generator starts from a fixed, well-known seed): new every run, the same on replay
    torch.manual_seed(checks.seed_for_test("torch default generator"))
    random.seed(checks.seed_for_test("random"))
    if WORKER_MODE:  # the worker is forked on first use; its calls must end before the runner's limit
        limit = float(os.environ.get(TIMEOUT_ENV) or 300)
        _client.begin_test(max(5.0, limit - 10.0))
        return
    _snapshot = sandbox.Snapshot()


# What checkers and timers rely on, bound here before any student code is imported. After every
# test each is compared with its binding; a replacement fails the test that made it ("tampering")
# and is undone, so later tests run with the real functions.
def _guarded() -> dict[tuple[object, str], object]:
    import time as _time

    import torch as _torch
    import torch.testing as _tt

    from . import checks as _checks, timing as _timing

    targets = [(_torch, n) for n in ("allclose", "isclose", "equal", "isfinite", "isnan", "testing")]
    targets += [(_torch.Tensor, n) for n in ("__sub__", "__eq__", "__lt__", "__le__", "__gt__", "__ge__", "abs", "max",
                                               "norm", "any", "all", "float", "double", "item", "tolist")]
    targets += [(_tt, "assert_close"), (_time, "perf_counter"), (_time, "time"), (_time, "monotonic")]
    targets += [(_torch.cuda, "Event"), (_torch.cuda, "synchronize")]
    targets += [(_checks, n) for n in ("assert_close", "poison_", "Unchanged", "TOLERANCES")]
    targets += [(_timing, n) for n in ("compare", "record", "Comparison", "Timing", "L2Flusher")]
    targets += [(_timing.Comparison, "ratio"), (Grade, "fraction")]
    bound = {(obj, name): getattr(obj, name) for obj, name in targets if hasattr(obj, name)}
    return {**bound, **sandbox.guarded()}


_GUARDED: dict = {}


def _tampered() -> list[str]:
    changed = []
    for (obj, name), original in _GUARDED.items():
        if getattr(obj, name, None) is not original:
            changed.append(f"{getattr(obj, '__name__', type(obj).__name__)}.{name}")
            setattr(obj, name, original)
    return changed


def _fail(report, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = reason
    report._autograder_reason = reason


def _cuda_fault() -> str | None:
    """None if the GPU still works after the test, else why not (the error is sticky: the
    process must go, see pytest_runtest_logfinish)."""
    if not (HAS_CUDA and torch.cuda.is_initialized()):
        return None
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return None
    except Exception as e:  # noqa: BLE001
        return short_reason(e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    global _restart_reason
    outcome = yield
    report = outcome.get_result()
    if WORKER_MODE:
        if call.excinfo is not None and report.failed:
            report._autograder_reason = short_reason(call.excinfo.value)
        elif report.skipped and call.excinfo is not None:
            report._autograder_reason = str(getattr(call.excinfo.value, "msg", call.excinfo.value))
        return
    if call.when == "call" and _GUARDED:
        changed = _tampered()
        if changed:
            return _fail(report, f"tampering: the submission replaced {', '.join(changed)} (functions the grader "
                                 "checks and times with); restored, and this test scores 0")
    if call.when == "call":
        fault = _cuda_fault()
        if fault is not None:
            _restart_reason = fault
            return _fail(report, fault if report.passed or not getattr(call.excinfo, "value", None)
                         else short_reason(call.excinfo.value))
        left = _snapshot.leftovers() if _snapshot is not None else []  # (children are killed either way)
        if left and report.passed:
            return _fail(report, f"left running after the test: {', '.join(left)}. Join the threads and wait for the "
                                 "processes you start (children were killed)")
    if call.excinfo is not None and report.failed:
        report._autograder_reason = short_reason(call.excinfo.value)
    elif report.skipped and call.excinfo is not None:
        report._autograder_reason = str(getattr(call.excinfo.value, "msg", call.excinfo.value))


_CUDA_HINTS = [
    ("illegal memory access", "CUDA illegal memory access (a load or store out of bounds in a kernel: check the "
                              "masks and the block-table/slot indices)"),
    ("device-side assert", "CUDA device-side assert (an index out of range in a tensor op on the GPU?)"),
    ("misaligned address", "CUDA misaligned address (a pointer offset that breaks the dtype's alignment)"),
    ("unspecified launch failure", "CUDA launch failure (a kernel crashed)"),
]


def short_reason(exc: BaseException) -> str:
    """One line a student can act on: the exception type and the first line of its message."""
    name = type(exc).__name__
    msg = str(exc).strip()
    for needle, what in _CUDA_HINTS:
        if needle in msg:
            return f"{what}: {name}: {msg.splitlines()[0][:200]}"
    if name == "OutOfMemoryError":
        return f"GPU out of memory: {msg.splitlines()[0][:300]}"
    if name == "MemoryError":
        return f"host out of memory (MemoryError{': ' + msg.splitlines()[0][:200] if msg else ''})"
    marker = msg.rfind("not implemented: ")
    if marker >= 0:  # a stub inside a Triton kernel: the message is wrapped in a compiler/interpreter error,
        # the compiler's after a source excerpt (the last occurrence is the message itself), the
        # interpreter's as AssertionError('...'): take off that quote and parenthesis, not the hint's own
        first = msg[marker:].splitlines()[0]
        return (first[:-2] if first.endswith(("')", '")')) else first)[:400]
    if name == "AssertionError":
        msg = msg.split("\nassert ")[0]  # drop pytest's rewritten expression
    first = msg.splitlines()[0] if msg else ""
    if name == "NotImplementedError":
        return f"not implemented: {first}" if first else "not implemented"
    text = f"{name}: {first}" if first else name
    return text if len(text) <= 1200 else text[:1200] + " ... (the whole message: results/logs/)"


_state: dict[str, dict] = {}


def pytest_runtest_logreport(report):
    st = _state.setdefault(report.nodeid, {"failed": False, "reason": "", "skipped": False, "duration": 0.0})
    st["duration"] += report.duration
    if report.failed and not st["failed"]:
        st["failed"] = True
        st["reason"] = getattr(report, "_autograder_reason", "") or (
            f"error in test {report.when}" if report.when != "call" else "failed")
    if report.skipped:
        st["skipped"] = True
        st["reason"] = getattr(report, "_autograder_reason", "") or str(
            report.longrepr[-1] if isinstance(report.longrepr, tuple) else "skipped")


def pytest_runtest_logfinish(nodeid, location):
    st = _state.pop(nodeid, None) or {"failed": True, "reason": "no report", "skipped": False, "duration": 0.0}
    if WORKER_MODE:
        died = _client.end_test()  # the test's worker, and whatever it started, is gone now
        if died and not st["failed"]:
            st["failed"], st["reason"] = True, died
    item = _items.get(nodeid)
    points = points_of(item) if item is not None else 0.0
    g: Grade | None = getattr(item, "_autograder_grade", None) if item is not None else None
    if st["failed"]:
        status, score = "failed", 0.0
    elif st["skipped"]:
        status, score = "not_graded", 0.0
        if not st["reason"].startswith(NOT_GRADED_PREFIX):
            st["reason"] = f"{NOT_GRADED_PREFIX}: {st['reason']}"
    else:
        status = "passed"
        frac = g.frac if g is not None and g.frac is not None else 1.0
        score = round(points * frac, 4)
        st["reason"] = g.detail if g is not None else ""
    _send({"type": "result", "nodeid": nodeid, "status": status, "score": score, "max_score": points,
           "reason": st["reason"], "duration": round(st["duration"], 3),
           "extra": dict(g.extra) if g is not None else {}})
    if _restart_reason is not None:
        # every later CUDA call in this process would fail too: the grader restarts the suite on
        # the tests not yet run, in a fresh process, without charging them
        _send({"type": "restart", "reason": _restart_reason})
        if _channel is not None:
            _channel.close()
        os._exit(0)
    if st["failed"] and HAS_CUDA and torch.cuda.is_initialized():
        gc.collect()  # what a failed test (a GPU out-of-memory, say) held on to, before the next test
        torch.cuda.empty_cache()


_items: dict = {}


def pytest_collection_finish(session):
    """Sent after -k / --deselect have run: the list is exactly what this process will run."""
    for item in session.items:
        _items[item.nodeid] = item
    _send({"type": "collected", "tests": [
        {"nodeid": i.nodeid, "name": _name(i), "points": points_of(i), "tier": tier_of(i)}
        for i in [*session.items, *_deferred]
    ]})


def pytest_sessionfinish(session, exitstatus):
    if WORKER_MODE:
        _client.shutdown()
        _send({"type": "isolation", "level": _client.isolation_level()})
    _send({"type": "done"})
