"""The collectives: mean, not sum; the ring algorithm's byte counts."""
import pytest
import torch

from autograder.checks import assert_close

from zero_common import run_ranks


@pytest.mark.points(1)
def test_ring_bytes(zero):
    """Bytes one rank sends: (W-1)/W of the full size for all-gather and reduce-scatter, twice that
    for all-reduce, 0 on one rank."""
    rb = zero.comm.ring_bytes
    for ws in (1, 2, 3, 4, 8):
        for nbytes in (0, 24, 4096, 10**9 + 8):
            per = nbytes * (ws - 1) // ws
            for op, want in (("all_gather", per), ("reduce_scatter", per), ("all_reduce", 2 * per)):
                got = rb(op, nbytes, ws)
                assert got == want, f"ring_bytes({op!r}, {nbytes}, {ws}) = {got}, expected {want}"


@pytest.mark.points(2)
@pytest.mark.parametrize("world_size", [2, 3])
def test_mean_reductions(zero, rng, world_size):
    """reduce_scatter_mean gives each rank its slice of the mean over ranks; all_reduce_mean_ the
    whole mean (gradients are averaged: summing multiplies the learning signal by W)."""
    seed = int(torch.randint(0, 2**20, (1,), generator=rng))
    out = run_ranks("reduce_scatter_check", world_size, (seed, 5))
    for rank, r in enumerate(out):
        want = r["expected"]
        assert_close(r["shard"], want[rank * 5:(rank + 1) * 5], what=f"rank {rank}: reduce_scatter_mean's shard",
                     atol=1e-6, rtol=1e-6)
        assert_close(r["full"], want, what=f"rank {rank}: all_reduce_mean_", atol=1e-6, rtol=1e-6)
