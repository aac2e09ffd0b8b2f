"""Autoregressive generation: prefill the prompts once, then decode one token per step.

Ragged batches with a contiguous cache: prompts of different lengths are LEFT-padded to the
longest, so every sequence's newest token sits in the same cache slot. Padding slots are
marked invalid in `kv_valid` and never attended to. Each token's RoPE position counts only
its own sequence's real tokens: for a prompt of length n padded by p, slot s has position
s - p. (The padding is memory the cache holds for nothing: assignment 2 removes it.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .sampling import SamplingParams, sample

if TYPE_CHECKING:  # for the signature only: generate() runs whatever model it is given
    from .model import CausalLM


@torch.no_grad()
def generate(model: CausalLM, prompts: list[list[int]], params: SamplingParams,
             use_cache: bool = True) -> list[list[int]]:
    """Generate up to params.max_tokens new tokens for each prompt.

    Args:
        model: a kv_cache.model.CausalLM (call it as model(input_ids, positions, caches, kv_valid, last_only=True);
            model.allocate_kv_caches(batch, max_len) gives the caches; model.config.eos_token_id
            is a list of end-of-sequence ids; model.device is where tensors go).
        prompts: token ids, one list per sequence, lengths may differ (each >= 1).
        params: SamplingParams. With a seed, make ONE torch.Generator(device=model.device)
            seeded with it and pass it to every sample() call.
        use_cache: True: prefill once, then feed only the newest token per step.
            False: recompute the whole sequence every step (the slow baseline; same tokens).
    Returns:
        The new tokens of each sequence (without the prompt). A sequence stops after
        max_tokens tokens or right after emitting an EOS id (which is included), unless
        params.ignore_eos.
    """
    raise NotImplementedError(
        "kv_cache: generate (kv_cache/generate.py): left-pad; positions = slot - pad; prefill; loop: sample, append, "
        "feed [B, 1] at position len + step")
