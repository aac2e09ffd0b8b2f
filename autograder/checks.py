"""Comparing an answer with a reference: one function, tolerances stated per dtype.

assert_close checks, in order: shape, no NaN/inf where the reference is finite, elementwise
|a - r| <= atol + rtol * |r|, and the relative norm ||a - r|| / ||r|| (which catches an answer
that is wrong everywhere by a little, e.g. a missing scale on small values). The reference is
computed in float32 or float64 by the caller.
"""
from __future__ import annotations

import hashlib
import os
import random

import torch

# (atol, rtol, relative-norm bound) for an answer computed in this dtype against an fp32/fp64
# reference. bf16 has 8 mantissa bits (eps 7.8e-3), fp16 11 (eps 9.8e-4).
TOLERANCES = {
    torch.float64: (1e-10, 1e-10, 1e-12),
    torch.float32: (1e-4, 1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2, 1.6e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, what: str, dtype: torch.dtype | None = None,
                 atol: float | None = None, rtol: float | None = None, rel_norm: float | None = None) -> None:
    """Raise AssertionError with a message a student can act on if `actual` is not `expected`."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: shape {list(actual.shape)}, expected {list(expected.shape)}")
    d_atol, d_rtol, d_norm = TOLERANCES[dtype or actual.dtype]
    atol, rtol = (d_atol if atol is None else atol), (d_rtol if rtol is None else rtol)
    rel_norm = d_norm if rel_norm is None else rel_norm
    a = actual.detach().to("cpu", torch.float64)
    r = expected.detach().to("cpu", torch.float64)
    bad_nan = ~torch.isfinite(a) & torch.isfinite(r)
    if bad_nan.any():
        idx = tuple(bad_nan.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(bad_nan.sum())} of {a.numel()} elements are NaN/inf "
                             f"(first at index {list(idx)}); unwritten output or a read past the valid data?")
    both = torch.isfinite(r)
    err = (a - r).abs().where(both, torch.zeros_like(a))
    limit = atol + rtol * r.abs()
    over = err > limit
    if over.any():
        idx = tuple(over.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(over.sum())} of {a.numel()} elements differ; max |diff| {err.max():.3g} "
                             f"(atol {atol:g}, rtol {rtol:g}); first at index {list(idx)}: got {a[idx]:.6g}, "
                             f"expected {r[idx]:.6g}")
    denom = r.where(both, torch.zeros_like(r)).norm()
    rel = float(err.norm() / denom) if denom > 0 else float(err.norm())
    if rel > rel_norm:
        raise AssertionError(f"{what}: relative error ||a - r|| / ||r|| = {rel:.3g} > {rel_norm:g}")


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN (or the integer minimum) so any element left unwritten fails the check."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(torch.iinfo(t.dtype).min)


def same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share a storage: here, or (both copied from the submission's worker)
    where they came from."""
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr():
        return True
    from .remote.client import origin

    oa, ob = origin(a), origin(b)
    return oa is not None and oa == ob


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and elements, a NaN equal to a NaN in the same place."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point()
                                        else (a == b)).all())


class Unchanged:
    """Snapshot tensors before a call; .check() fails if the call modified any of them (NaN-aware),
    or if `output` shares memory with one (an answer must be a new tensor, or the `out` given)."""

    def __init__(self, **tensors: torch.Tensor):
        self.names = list(tensors)
        self.tensors = tensors
        self.copies = {k: v.detach().clone() for k, v in tensors.items()}

    def check(self, output: torch.Tensor | None = None, what: str = "the call") -> None:
        for k in self.names:
            a, b = self.tensors[k], self.copies[k]
            if not _same(a, b):
                raise AssertionError(f"{what} modified its input `{k}`: inputs are read-only")
            if output is not None and same_memory(output, a):
                raise AssertionError(f"{what} returned a tensor that shares memory with its input `{k}`")


SEED_ENV = "AUTOGRADER_SEED"   # the grading run's seed: `grade --seed N` replays a run's inputs
_current_test = ""                # the running test's node id (set by the plugin)
_draws: dict[str, int] = {}


def run_seed() -> int:
    """The grading run's seed: drawn by `grade` from the operating system's entropy (or given with
    --seed to replay a run) and passed to the suites only, never to the worker that runs
    submission code; a process without one draws its own once."""
    global _fallback_seed
    value = os.environ.get(SEED_ENV)
    if value:
        return int(value)
    if _fallback_seed is None:
        _fallback_seed = random.SystemRandom().randrange(2**31)
    return _fallback_seed


_fallback_seed: int | None = None


def seed_for_test(salt: str = "") -> int:
    """A seed for the running test, derived from the run's seed and the test's node id (each call
    in a test gets the next one): the same run seed gives the same inputs to the same test, so a
    failure can be replayed (`grade --seed N -k TEST`); a new run gets new ones, which the code
    under test cannot derive (torch's default generators start from a fixed, well-known seed)."""
    key = f"{_current_test}|{salt}"
    n = _draws[key] = _draws.get(key, -1) + 1
    digest = hashlib.sha256(f"{run_seed()}|{key}|{n}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def secret_seed() -> int:
    """A seed for timed inputs: seed_for_test, so new every run and not derivable by the code under test."""
    return seed_for_test("secret")


def begin_test(nodeid: str) -> None:
    global _current_test
    _current_test = nodeid
    _draws.clear()


def assert_not_reused(earlier: torch.Tensor, earlier_copy: torch.Tensor, later: torch.Tensor, what: str) -> None:
    """A later call must not hand back, or overwrite, the tensor an earlier call returned (a cached
    output buffer): callers keep outputs, as the engine keeps logits and the model keeps layers' outputs."""
    if same_memory(later, earlier):
        raise AssertionError(f"{what}: the second call returned the same memory as the first (a cached output "
                             "buffer?): return a new tensor each call")
    if not _same(earlier, earlier_copy):
        raise AssertionError(f"{what}: the second call changed the tensor the first call returned (a cached output "
                             "buffer?): return a new tensor each call")
