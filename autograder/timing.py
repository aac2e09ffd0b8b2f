"""The speed harness every speed test and benchmark uses.

    result = compare({"student": f, "vllm": g}, make_inputs, check, student="student", baseline="vllm")

For each trial: fresh inputs (make_inputs(trial)); then every contender in a rotated order,
each preceded by an L2 flush (a write of twice the device's L2), timed with CUDA events; the
output of every timed call is checked (check(inputs, output) raises on a wrong answer).

device_time=True (kernels): after the flush the GPU is held by a short spin
(torch.cuda._sleep) long enough for the host to enqueue the call, so the events measure the
GPU time of the call's kernels, not Python's launch overhead; that is what a CUDA-graph
engine pays. A contender that syncs with the host inside its call still pays for it.
device_time=False (end-to-end, e.g. generate()): host overhead is part of the answer. After
`min_trials`, trials stop once every contender's interquartile range is within
`spread` of its median, or at `max_trials` / `budget_s`. The figure is a ratio of medians,
baseline / student (above 1: the student is faster), recorded with GPU, driver and versions.

Two more checks on the student's calls: a timed output may not share memory with the previous
trial's (a cached answer), and with `forbidden_kernels` (a regex, e.g. "vllm::") one call is
profiled and fails if it launches a kernel of the baseline's.

`compare` calls its contenders in this process. For submission code that runs in a worker (the
graded suites), kernels are timed by `compare_loops` instead, which keeps every decision here:
see its docstring. End-to-end runs (a whole generate(), a whole workload) are one request each
and are timed by `compare` with device_time=False: the clock is this process's, and the outputs
come back by value, so they exist when the clock stops.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from . import config, environment
from .checks import poison_


@dataclass
class Timing:
    name: str
    median_ms: float
    iqr_ms: float
    samples: int
    all_ms: list[float] = field(repr=False, default_factory=list)


@dataclass
class Comparison:
    timings: dict[str, Timing]
    student: str
    baseline: str
    environment: dict
    review: float | None = None  # set by record() from the test's grading.toml entry

    def median_rate(self, name: str, sizes: list[float]) -> float:
        """Median over trials of sizes[t] / time[t] per second, for sizes[t] the work of trial t
        (e.g. bytes read): inputs differ per trial, so dividing by one draw's size would not do."""
        ms = self.timings[name].all_ms
        if len(sizes) < len(ms):
            raise ValueError(f"{len(sizes)} sizes for {len(ms)} trials: record one size per make_inputs(trial)")
        return statistics.median(sz / (t * 1e-3) for sz, t in zip(sizes, ms))

    @property
    def ratio(self) -> float:
        """baseline time / student time: 1.25 means the student is 25% faster."""
        return self.timings[self.baseline].median_ms / self.timings[self.student].median_ms

    @property
    def needs_review(self) -> bool:
        return self.ratio > (self.review if self.review is not None else config.review_ratio())

    def describe(self) -> str:
        parts = [f"{n} {t.median_ms:.3f} ms (IQR {t.iqr_ms:.3f}, n={t.samples})" for n, t in self.timings.items()]
        flag = "  [ratio above review threshold: check the baseline and the submission]" if self.needs_review else ""
        return f"{self.ratio:.3f}x {self.baseline}: " + "; ".join(parts) + flag

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "student": self.student, "baseline": self.baseline,
                "timings": {k: {kk: vv for kk, vv in asdict(v).items() if kk != "all_ms"}
                            for k, v in self.timings.items()},
                "environment": self.environment}


class L2Flusher:
    def __init__(self, device: torch.device):
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20) or 50 * 2**20
        self.buf = torch.empty(2 * l2 // 4 + 1, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.fill_(0x5A5A)


def _cycles_per_us(dev) -> float:
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1000)
    a.record()
    torch.cuda._sleep(2_000_000)
    b.record()
    b.synchronize()
    return 2_000_000 / (a.elapsed_time(b) * 1e3)


def _storages(out: Any) -> set[int]:
    """Data pointers of the tensors in an output (a tensor, or a tuple/list/dict of them)."""
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
    return {t.untyped_storage().data_ptr() for t in items if isinstance(t, torch.Tensor) and t.numel() > 0} - {0}


def kernels_launched(fn: Callable[[], Any]) -> list[str]:
    """Names of the GPU kernels one call of fn launches (torch.profiler, CUDA activity)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")})


def compare(fns: dict[str, Callable[[Any], Any]], make_inputs: Callable[[int], Any],
            check: Callable[[Any, Any], None] | None, *, student: str, baseline: str,
            warmup: int = 3, min_trials: int = 10, max_trials: int = 200, spread: float = 0.05,
            budget_s: float = 60.0, device: str = "cuda", device_time: bool = True,
            forbidden_kernels: str | None = None) -> Comparison:
    if not torch.cuda.is_available():
        raise RuntimeError("timing needs a CUDA GPU")
    dev = torch.device(device)
    flush = L2Flusher(dev)
    names = list(fns)
    inputs = make_inputs(-1)
    host_s = 0.0
    rounds = max(warmup, 2)
    for w in range(rounds):  # compile, autotune, allocate, create handles
        for n in names:
            torch.cuda.synchronize(dev)
            t = time.perf_counter()
            out = fns[n](inputs)
            if w == rounds - 1:  # the last round, after compilation: how long the host takes to enqueue
                host_s = max(host_s, time.perf_counter() - t)
            if check is not None:
                check(inputs, out)
    torch.cuda.synchronize(dev)
    if forbidden_kernels and student != baseline:
        launched = kernels_launched(lambda: fns[student](inputs))
        hits = [k for k in launched if re.search(forbidden_kernels, k)]
        if hits:
            raise AssertionError(f"the student's call launched the baseline's kernel {hits[0][:120]}: the speed test "
                                 f"compares your code with {baseline}, not {baseline} with itself")
    hold_us = min(2 * host_s * 1e6 + 50, 20_000)  # capped: a call that needs more is host-bound anyway
    hold = int(hold_us * _cycles_per_us(dev)) if device_time else 0
    samples: dict[str, list[float]] = {n: [] for n in names}
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    previous = None  # the student's last timed output, kept alive so its memory cannot be reused
    t0 = time.time()
    for trial in range(max_trials):
        inputs = make_inputs(trial)
        order = names[trial % len(names):] + names[:trial % len(names)]
        for n in order:
            flush()
            if hold:
                torch.cuda._sleep(hold)  # the GPU waits here while the host enqueues the call
            start.record()
            out = fns[n](inputs)
            stop.record()
            stop.synchronize()
            samples[n].append(start.elapsed_time(stop))
            if check is not None:
                check(inputs, out)  # the timed output itself is checked
            if n == student:
                if previous is not None and _storages(out) & _storages(previous):
                    raise AssertionError("the timed call returned memory that also holds the previous trial's output "
                                         "(a cached answer or output buffer): return a new tensor, or the `out` given")
                previous = out
        if trial + 1 >= min_trials:
            settled = all(_iqr(s) <= spread * statistics.median(s) for s in samples.values())
            if settled or time.time() - t0 > budget_s:
                break
    timings = {n: Timing(n, statistics.median(s), _iqr(s), len(s), s) for n, s in samples.items()}
    env = dict(environment.describe(),
               timing="device time (launch overhead hidden)" if device_time else "host + device time")
    return Comparison(timings, student, baseline, env)


def _iqr(xs: list[float]) -> float:
    if len(xs) < 4:
        return float("inf")
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def record(grade, cmp: Comparison, assignment: str, key: str) -> float:
    """Turn a comparison into the test's share of points (grading.toml) and record the figures."""
    scale = config.speed_scale(assignment, key)
    cmp.review = config.review_ratio(assignment, key)
    frac = scale.fraction(cmp.ratio)
    grade.extra.update(cmp.to_dict())
    grade.extra["needs_review"] = cmp.needs_review
    grade.fraction(frac, cmp.describe())
    return frac


# ----------------------------------------------------------------------------- kernels in workers

def worker_loop(fn, calls: list, what: str, graph: bool = False) -> tuple[Callable[[], Any], bool, str]:
    """A loop made in fn's worker (its "bench" request): fn(*args, **kwargs) for each (args, kwargs)
    of `calls`, back to back, in one CUDA graph where `graph` is set and the worker can make one.
    Returns (run, whether it is a graph, why not): run() runs the loop once, in one request, and
    returns when it has finished (on the GPU too). `fn` is a proxy of something in a worker."""
    from .remote.client import Remote

    if not isinstance(fn, Remote):
        raise TypeError("a timed loop runs in a worker: fn must be a proxy (client.current(), trusted_worker())")
    conn = object.__getattribute__(fn, "_r_conn")
    reply = conn.request("bench", f"preparing {what}", handle_id=object.__getattribute__(fn, "_r_id"),
                         calls=[(tuple(a), dict(k)) for a, k in calls], graph=graph)
    if type(reply) is not dict or type(reply.get("id")) is not int:
        raise AssertionError(f"the worker did not prepare {what}")
    bench = reply["id"]

    def run():
        return conn.request("bench_run", what, bench=bench)
    return run, bool(reply.get("graph")), str(reply.get("why", ""))[:300]


@dataclass
class Loop:
    """One contender of `compare_loops`: `fn` (a function or object in a worker, as a proxy) called
    once per entry of `calls` ((args, kwargs) pairs), back to back. Every tensor in the calls is a
    view of GPU memory this process owns (`client.device_tensor`). `write(fresh)` copies a
    trial's fresh inputs into this loop's own memory; `outputs` are the tensors the calls write."""
    fn: Any
    calls: list
    write: Callable[[Any], None]
    outputs: list[torch.Tensor]
    run_loop: Callable[[], Any] | None = None
    graph: bool = False
    why_no_graph: str = ""

    def prepare(self) -> None:
        self.run_loop, self.graph, self.why_no_graph = worker_loop(self.fn, self.calls, "the timed loop", graph=True)

    def run(self, fresh: Any) -> tuple[float, list[torch.Tensor]]:
        """One timed run: poison the outputs, then on this process's clock write the fresh inputs,
        let the worker run every call, and copy the outputs out. Returns (seconds, the copies)."""
        for o in self.outputs:
            poison_(o)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.write(fresh)
        torch.cuda.synchronize()  # the inputs are in place before the worker is asked
        self.run_loop()
        copies = [o.clone() for o in self.outputs]
        torch.cuda.synchronize()
        return time.perf_counter() - t0, copies


class _baseline_errors:
    """A failure of the baseline (vLLM raising, its worker dying, its output failing the check) is
    "not graded here: baseline error ...", never the student's."""

    def __init__(self, is_baseline: bool, what: str):
        self.is_baseline, self.what = is_baseline, what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if self.is_baseline and kind is not None and issubclass(kind, Exception):
            import pytest

            pytest.skip(f"not graded here: baseline error in {self.what}: {type(exc).__name__}: {str(exc)[:400]}")
        return False


def compare_loops(loops: dict[str, Loop], fresh: Callable[[int], Any],
                  check: Callable[[Any, str, list[torch.Tensor]], None], *, student: str, baseline: str,
                  calibrate: Loop | None = None, min_trials: int = 8, max_trials: int = 40, spread: float = 0.03,
                  budget_s: float = 30.0) -> Comparison:
    """Time kernels that run in workers, with every decision in this (trusted) process.

    Each contender's calls run in its worker, back to back in one CUDA graph (captured untimed by
    `Loop.prepare`); their inputs and outputs live in GPU memory this process owns and the worker
    maps. Per trial and contender, this process: poisons the outputs (NaN), starts its clock,
    writes the trial's fresh inputs (so nothing can be computed before the clock starts), asks the
    worker to run the loop and answer when its GPU work is done, copies every output out, and stops
    its clock when the copy is complete: work that was not finished by then is not in the copy, and
    a copy with poison left in it fails the check. `check(fresh, name, copies)` then checks every
    call's output (rows it samples after the run, which the worker cannot know).

    The figure is (clock - round trip) / number of calls, median over trials, where the round trip
    (writing the inputs, the request, the copy) is measured with `calibrate`: the baseline's loop
    prepared with no calls, in the trusted worker, so the submission cannot influence it. Every
    contender carries the same round trip; with runs of tens of milliseconds it is a few percent.
    Contenders alternate in a rotated order, as in `compare`."""
    if not torch.cuda.is_available():
        raise RuntimeError("timing needs a CUDA GPU")
    names = list(loops)
    for n in names:
        with _baseline_errors(n != student, f"preparing {n}"):
            loops[n].prepare()
    overhead_s = 0.0
    if calibrate is not None:
        with _baseline_errors(True, "calibrating the round trip"):
            calibrate.prepare()
            warm = fresh(-1)
            trips = [calibrate.run(warm)[0] for _ in range(7)]
        overhead_s = statistics.median(trips[2:])
    samples: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.time()
    for trial in range(max_trials):
        inputs = fresh(trial)
        order = names[trial % len(names):] + names[:trial % len(names)]
        for n in order:
            loop = loops[n]
            with _baseline_errors(n != student, f"the timed run of {n}"):
                seconds, copies = loop.run(inputs)
                check(inputs, n, copies)
            samples[n].append(1e3 * max(seconds - overhead_s, 1e-9) / max(len(loop.calls), 1))
        if trial + 1 >= min_trials:
            settled = all(_iqr(s) <= spread * statistics.median(s) for s in samples.values())
            if settled or time.time() - t_start > budget_s:
                break
    timings = {n: Timing(n, statistics.median(s), _iqr(s), len(s), s) for n, s in samples.items()}
    graphs = {n: ("one CUDA graph" if loops[n].graph else f"a Python loop ({loops[n].why_no_graph or 'no graph'})")
              for n in names}
    env = dict(environment.describe(),
               timing=f"GPU time of {len(loops[student].calls)} back-to-back calls per run, on the grader's clock, "
                      f"minus its round trip ({1e3 * overhead_s:.3f} ms)",
               runs_as=graphs)
    cmp = Comparison(timings, student, baseline, env)
    if math.isnan(cmp.ratio):
        raise AssertionError("the comparison produced no figure")
    return cmp
