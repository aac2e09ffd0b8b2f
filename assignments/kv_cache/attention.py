"""Grouped-query attention that reads and writes the KV cache.

Shapes:
    hidden     [batch, T, hidden_size]            T = prompt length in prefill, 1 in decode
    q          [batch, num_heads, T, head_dim]
    k, v       [batch, num_kv_heads, S, head_dim] S = tokens visible (cache length after append)
    kv_valid   [batch, S] bool                    False at left-padding slots
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .rope import apply_rotary


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Expand KV heads for grouped-query attention.

    x: [batch, num_kv_heads, S, head_dim] -> [batch, num_kv_heads * n_rep, S, head_dim]
    Query head h reads KV head h // n_rep: heads 0..n_rep-1 share KV head 0, and so on
    (the mapping of Llama, Qwen2, vLLM and transformers).
    """
    raise NotImplementedError(
        "kv_cache: repeat_kv (kv_cache/attention.py): each KV head is repeated n_rep times in a row (repeat_interleave "
        "on dim 1, or expand + reshape)")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_valid: torch.Tensor | None,
           scale: float) -> torch.Tensor:
    """Causal scaled-dot-product attention of T new queries over S keys, S >= T.

    The T queries are the *last* T tokens of the S visible ones: query t sits at slot
    S - T + t and may see key slot s iff s <= S - T + t and kv_valid[b, s].

    Args:
        q: [batch, num_heads, T, head_dim]
        k, v: [batch, num_kv_heads, S, head_dim]; num_heads is a multiple of num_kv_heads
        kv_valid: [batch, S] bool, or None (all valid)
        scale: multiply q.k by this (1 / sqrt(head_dim))
    Returns:
        [batch, num_heads, T, head_dim] in q's dtype. Compute the scores q.k and the softmax in
        float32 (scores in bf16 lose their low bits: at a score of 30, about 0.1); the weighted
        sum may use float32 too. A query that sees no key at all (a padding query) returns
        zeros, not NaN.
    """
    raise NotImplementedError(
        "kv_cache: attend (kv_cache/attention.py): scores in fp32 = scale * q @ k^T over repeat_kv'd heads; mask with "
        "-inf; softmax; NaN rows -> 0; @ v")


class Attention(nn.Module):
    """One layer's self-attention. Parameter names match transformers' checkpoints."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                kv_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Attention for T new tokens.

        Args:
            hidden: [batch, T, hidden_size]
            cos, sin: [batch, 1, T, head_dim], the RoPE angles of each new token's position in its
                own sequence (the model computes them once per forward from `positions` with
                rope.rotary_cos_sin, for all layers).
            cache: this layer's KVCache, or None to attend over the T tokens alone (no cache).
                With a cache, the new K/V are appended and the queries attend over everything
                in it; the new tokens are the last T of the cache.
            kv_valid: [batch, S] bool over the S = (cache length after append, or T) visible
                slots; None means all valid.
        Returns:
            [batch, T, hidden_size]

        Steps: project q, k, v and split heads ([batch, heads, T, head_dim]); rotate q and k
        with apply_rotary (k is stored in the cache already rotated); append to the cache;
        attend(); merge heads; o_proj.
        """
        raise NotImplementedError(
            "kv_cache: Attention.forward (kv_cache/attention.py): q/k/v projections -> [B, heads, T, D]; "
            "apply_rotary(q and k, cos, sin); cache.append; attend; o_proj")
