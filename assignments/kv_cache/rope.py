"""Rotary position embeddings (RoPE), as Llama and Qwen2 apply them. Given code.

RoPE rotates each query and key by an angle proportional to its token's *position*, so the
score q_i . k_j depends on i - j. With a cache, the positions of new tokens continue from
where the sequence stands: the 5th generated token of a 100-token prompt is at position 104.
"""
from __future__ import annotations

import math

import torch


def inv_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """[head_dim // 2] float32 inverse frequencies, with Llama-3's long-context scaling if asked.
    Computed on the CPU (a few numbers), also while a model is built on the meta device."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim))
    if scaling and scaling.get("rope_type", "default") == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - lo) / (hi - lo)
        scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
        mid = (wavelen <= old_len / lo) & (wavelen >= old_len / hi)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif scaling and scaling.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE scaling {scaling.get('rope_type')!r} is not supported by the course model")
    return inv.float()


def rotary_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin for `positions` [batch, T] (int64): each [batch, 1, T, head_dim], in `dtype`."""
    freqs = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)[None, None, :]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # broadcast over heads
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [batch, heads, T, head_dim] by the angles in cos/sin [batch, 1, T, head_dim]."""
    return x * cos + rotate_half(x) * sin
