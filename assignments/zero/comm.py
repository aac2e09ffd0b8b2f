"""The collectives ZeRO needs, with a count of the bytes each rank sends.

Volumes follow the ring algorithm NCCL and gloo use for large tensors. For a collective over a
tensor whose full (unsharded) size is S bytes, on W ranks, each rank sends:

    all_gather      (W - 1) / W * S      (it passes on W - 1 shards of S / W)
    reduce_scatter  (W - 1) / W * S
    all_reduce      2 (W - 1) / W * S    (a reduce-scatter, then an all-gather)

so plain data parallelism (one all-reduce of the gradients) sends 2 S per step for large W;
ZeRO-1 and -2 (reduce-scatter the gradients, all-gather the parameters) send the same, and
ZeRO-3 (all-gather in forward, again in backward, reduce-scatter) sends 3 S: 1.5x.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.distributed as dist


class PendingMean:
    """A mean reduction in flight (`async_op=True`). Its result holds the ranks' sum, or nothing
    yet, until wait() has waited for the collective and divided by the world size. Given."""

    def __init__(self, work: dist.Work, result: torch.Tensor, world_size: int):
        self.work, self.result, self.world_size = work, result, world_size

    def wait(self) -> torch.Tensor:
        self.work.wait()  # on a GPU: the current stream waits for the collective's (no host sync)
        return self.result.div_(self.world_size)


def ring_bytes(op: str, nbytes: int, world_size: int) -> int:
    """Bytes one rank sends for `op` ("all_gather", "reduce_scatter" or "all_reduce") over a
    tensor of `nbytes` full size, on world_size ranks (0 on one rank). In integers: one ring pass
    is nbytes * (world_size - 1) // world_size (rounded down); an all-reduce is two passes, twice
    that rounded-down number."""
    if op not in ("all_gather", "reduce_scatter", "all_reduce"):
        raise ValueError(f"unknown collective {op!r}")
    raise NotImplementedError("zero: ring_bytes (zero/comm.py): the table in this file's docstring; integer arithmetic")


class Comm:
    """Collectives over one process group, each counted in `bytes_sent` (op -> bytes).

    Gradients are averaged, not summed: every rank computed the mean loss over its own
    micro-batch, so the mean over ranks is the gradient of the mean loss over the global batch.
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.bytes_sent: Counter[str] = Counter()

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    def _count(self, op: str, full: torch.Tensor) -> None:
        self.bytes_sent[op] += ring_bytes(op, full.numel() * full.element_size(), self.world_size)

    def all_reduce_mean_(self, t: torch.Tensor, async_op: bool = False) -> torch.Tensor | PendingMean:
        """t <- mean of t over the ranks, in place. Returns t; with async_op, a PendingMean whose
        wait() finishes the mean (t is not the mean before)."""
        self._count("all_reduce", t)
        raise NotImplementedError(
            "zero: Comm.all_reduce_mean_ (zero/comm.py): dist.all_reduce(..., async_op=async_op) sums; divide now, or "
            "in PendingMean.wait")

    def reduce_scatter_mean(self, shard: torch.Tensor, full: torch.Tensor,
                            async_op: bool = False) -> torch.Tensor | PendingMean:
        """shard [n / W] <- this rank's slice of the mean over ranks of full [n]. shard may be that
        slice of full itself (in place, as NCCL defines it: full[rank * n / W:(rank + 1) * n / W]).
        Returns shard; with async_op, a PendingMean whose wait() finishes the mean."""
        self._count("reduce_scatter", full)
        raise NotImplementedError(
            "zero: Comm.reduce_scatter_mean (zero/comm.py): dist.reduce_scatter_tensor(output, input, ...) sums; "
            "divide now, or in PendingMean.wait")

    def all_gather(self, full: torch.Tensor, shard: torch.Tensor, async_op: bool = False):
        """full [n] <- every rank's shard [n / W], in rank order. Returns a work handle if async_op
        (call .wait() before reading full)."""
        self._count("all_gather", full)
        return dist.all_gather_into_tensor(full, shard, group=self.group, async_op=async_op)
