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
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from . import config, environment


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
        return self.ratio > config.review_ratio()

    def describe(self) -> str:
        parts = [f"{n} {t.median_ms:.3f} ms (IQR {t.iqr_ms:.3f}, n={t.samples})" for n, t in self.timings.items()]
        flag = "  [ratio above review threshold: check the baseline and the submission]" if self.needs_review else ""
        return f"{self.ratio:.3f}x {self.baseline}: " + "; ".join(parts) + flag

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "student": self.student, "baseline": self.baseline,
                "timings": {k: {kk: vv for kk, vv in asdict(v).items() if kk != "all_ms"} for k, v in self.timings.items()},
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
    env = dict(environment.describe(), timing="device time (launch overhead hidden)" if device_time else "host + device time")
    return Comparison(timings, student, baseline, env)


def _iqr(xs: list[float]) -> float:
    if len(xs) < 4:
        return float("inf")
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def record(grade, cmp: Comparison, assignment: str, key: str) -> float:
    """Turn a comparison into the test's share of points (grading.toml) and record the figures."""
    scale = config.speed_scale(assignment, key)
    frac = scale.fraction(cmp.ratio)
    grade.extra.update(cmp.to_dict())
    grade.extra["needs_review"] = cmp.needs_review
    grade.fraction(frac, cmp.describe())
    return frac
