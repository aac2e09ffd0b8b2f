"""The contiguous KV cache: one preallocated buffer per layer, filled left to right.

Shapes used throughout:
    k, v buffers   [batch_size, num_kv_heads, max_len, head_dim]
    new k / v      [batch_size, num_kv_heads, num_new_tokens, head_dim]
"""
from __future__ import annotations

import torch


class CacheOverflowError(ValueError):
    """Raised when an append would write past max_len."""


def kv_cache_bytes(config, batch_size: int, seq_len: int, dtype: torch.dtype) -> int:
    """Bytes of KV cache a model needs for `batch_size` sequences of `seq_len` tokens.

    Every layer keeps a K and a V tensor of shape [batch_size, num_kv_heads, seq_len, head_dim].
    Grouped-query attention stores num_kv_heads (not num_heads) heads: that is the point of it.

    Args:
        config: has `num_layers`, `num_kv_heads`, `head_dim` (a kv_cache.model.ModelConfig).
        dtype: the cache's element type (torch.bfloat16 is 2 bytes; use `dtype.itemsize`).

    Example: Llama-3-8B (32 layers, 8 KV heads, head_dim 128) at bf16 needs 128 KiB per token.
    """
    # BEGIN SOLUTION hint: 2 (K and V) x layers x batch x seq_len x kv heads x head_dim x bytes per element
    return 2 * config.num_layers * batch_size * seq_len * config.num_kv_heads * config.head_dim * dtype.itemsize
    # END SOLUTION


class KVCache:
    """One layer's K and V for a batch, preallocated to `max_len` tokens.

    `length` counts the filled token slots (the same for every sequence in the batch; ragged
    prompts are left-padded by the caller, see generate.py). Slots [0, length) hold data,
    slots [length, max_len) are free and may hold anything, including NaN or stale values
    from before a reset(): never read them.

    Attributes you must create in __init__:
        self.k, self.v:  torch tensors [batch_size, num_kv_heads, max_len, head_dim], `dtype`, `device`
        self.length:     int, 0 after construction
    """

    def __init__(self, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        # BEGIN SOLUTION hint: allocate self.k and self.v with torch.empty(...) once, and set self.length = 0
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0
        # END SOLUTION

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes this cache holds allocated (both buffers, filled or not)."""
        return self.k.nbytes + self.v.nbytes

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `n` new tokens' K and V after the filled part; return views of everything filled.

        Args:
            k, v: [batch_size, num_kv_heads, n, head_dim]; n >= 1 (a whole prompt in prefill,
                  1 token per decode step).
        Returns:
            (keys, values): views (no copies) of slots [0, length + n), each
            [batch_size, num_kv_heads, length + n, head_dim].
        Raises:
            CacheOverflowError if length + n > max_len; the cache is left unchanged then.
        """
        # BEGIN SOLUTION hint: copy into self.k[:, :, self.length:self.length + n], advance self.length,
        #   return self.keys(), self.values()
        n = k.shape[2]
        if self.length + n > self.max_len:
            raise CacheOverflowError(
                f"KV cache overflow: {self.length} filled + {n} new > max_len {self.max_len}; allocate a larger cache")
        self.k[:, :, self.length:self.length + n] = k
        self.v[:, :, self.length:self.length + n] = v
        self.length += n
        return self.keys(), self.values()
        # END SOLUTION

    def keys(self) -> torch.Tensor:
        """View of the filled keys: [batch_size, num_kv_heads, length, head_dim]."""
        # BEGIN SOLUTION hint: a slice of self.k up to self.length along the token axis
        return self.k[:, :, :self.length]
        # END SOLUTION

    def values(self) -> torch.Tensor:
        """View of the filled values: [batch_size, num_kv_heads, length, head_dim]."""
        # BEGIN SOLUTION hint: a slice of self.v up to self.length along the token axis
        return self.v[:, :, :self.length]
        # END SOLUTION

    def reset(self) -> None:
        """Forget every token (keep the buffers): the next append writes at slot 0 again."""
        # BEGIN SOLUTION hint: no need to clear the buffers; what is past `length` is never read
        self.length = 0
        # END SOLUTION
