"""Flat, padded shards: how ZeRO lays out a group of parameters and splits it across ranks.

A FlatParamGroup is the parameters of one unit of the model (a transformer block: its norms,
attention and MLP weights; the engine decides the units), laid end to end in a single flat
buffer and padded so that it splits into world_size equal shards:

    flat [padded_numel] = | ln1.weight.flatten() | ... | out.bias.flatten() | padding (zeros) |
    rank r's shard      = flat[r * shard_numel : (r + 1) * shard_numel]

Equal shards are what torch.distributed's all_gather_into_tensor / reduce_scatter_tensor
require. The padding is never a parameter: it stays zero in the gradients, so Adam leaves it
at zero too.
"""
from __future__ import annotations

from itertools import accumulate

import torch


def padded_numel(numel: int, world_size: int) -> int:
    """numel rounded up to a multiple of world_size: padded_numel(10, 3) == 12, padded_numel(12, 3) == 12."""
    raise NotImplementedError(
        "zero: padded_numel (zero/partition.py): the smallest multiple of world_size that is >= numel")


def shard_range(numel: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of `rank`'s shard in the padded flat buffer of a group of `numel` elements.

    Every shard has padded_numel(numel, world_size) // world_size elements; the last ranks'
    shards may lie partly or wholly in the padding. shard_range(10, 2, 3) == (8, 12).
    """
    raise NotImplementedError(
        "zero: shard_range (zero/partition.py): shards are equal slices of the *padded* buffer, in rank order")


class FlatParamGroup:
    """The parameters of one unit of the model, as one flat padded buffer. Given, but for
    flatten / views / shard.

    Attributes: module_name (the unit's module, "" for the model), names (the parameters' full
    names), params, shapes, numels,
    offsets (where each parameter starts in the flat buffer), numel (their sum), padded_numel,
    shard_numel, start / end (this rank's shard).
    """

    def __init__(self, module_name: str, names: list[str], params: list[torch.nn.Parameter], rank: int,
                 world_size: int):
        self.module_name = module_name
        self.names = names
        self.params = params
        self.shapes = [p.shape for p in params]
        self.numels = [p.numel() for p in params]
        self.offsets = [0, *accumulate(self.numels)][:-1]
        self.numel = sum(self.numels)
        self.padded_numel = padded_numel(self.numel, world_size)
        self.shard_numel = self.padded_numel // world_size
        self.start, self.end = shard_range(self.numel, rank, world_size)
        # set by the engine: this group's slice of the rank's flat state tensors, the gathered
        # full buffer (stage 3: only while the module runs), an in-flight prefetch
        self.master = self.exp_avg = self.exp_avg_sq = self.grad_shard = self.param_shard = None
        self.full_grad: torch.Tensor | None = None
        self.flat: torch.Tensor | None = None
        # stage 3: the one tensor every gather of this group fills, whose storage is freed on
        # release. Only ZeroEngine._full_buffer makes or grows it.
        self.unsharded: torch.Tensor | None = None
        self.pending = None
        self.grads_ready = 0

    def flatten(self, tensors: list[torch.Tensor | None], dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
        """A new flat tensor [padded_numel]: tensors[i] (shaped like params[i]) at offsets[i],
        zeros where a tensor is None (a parameter that got no gradient) and in the padding."""
        dtype = dtype or next(t for t in tensors if t is not None).dtype
        device = device or self.params[0].device
        raise NotImplementedError(
            "zero: FlatParamGroup.flatten (zero/partition.py): torch.zeros, then copy each tensor into its slice")

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views into flat [padded_numel], one per parameter, shaped like it. No copies: writing
        into flat (an all-gather) updates what the views show."""
        raise NotImplementedError(
            "zero: FlatParamGroup.views (zero/partition.py): slice at offsets[i] for numels[i], then .view(shapes[i])")

    def shard(self, flat: torch.Tensor) -> torch.Tensor:
        """This rank's shard of flat [padded_numel], as a view [shard_numel]."""
        raise NotImplementedError("zero: FlatParamGroup.shard (zero/partition.py): see the docstring")

    def __repr__(self) -> str:
        return f"FlatParamGroup({self.module_name!r}, numel={self.numel}, padded={self.padded_numel})"
