"""The collectives: mean, not sum; the ring algorithm's byte counts."""
import pytest
import torch

from autograder.checks import assert_close
from autograder.remote.client import writable

from autograder.fixtures.ranks import SandboxRanks


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
    n = 5
    per_rank = torch.randn(world_size, n * world_size, generator=rng, dtype=torch.float64).float()
    want = per_rank.double().mean(0).float()
    # the outputs: each rank's shard, and the tensor all_reduce_mean_ averages in place
    shards = [writable(torch.full((n,), float("nan"))) for _ in range(world_size)]
    fulls = [writable(per_rank[r].clone()) for r in range(world_size)]
    with SandboxRanks(world_size) as ranks:
        comm = ranks.imports("zero.comm")
        comms = ranks.map(lambda r: comm[r].Comm(), "Comm()")
        ranks.map(lambda r: comms[r].reduce_scatter_mean(shards[r], per_rank[r].clone()), "reduce_scatter_mean")
        ranks.map(lambda r: comms[r].all_reduce_mean_(fulls[r]), "all_reduce_mean_")
    for rank in range(world_size):
        assert_close(shards[rank], want[rank * n:(rank + 1) * n], what=f"rank {rank}: reduce_scatter_mean's shard",
                     atol=1e-6, rtol=1e-6)
        assert_close(fulls[rank], want, what=f"rank {rank}: all_reduce_mean_ (in place)", atol=1e-6, rtol=1e-6)
