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
    # BEGIN SOLUTION hint: left-pad; positions = slot - pad; prefill;
    #   loop: sample, append, feed [B, 1] at position len + step
    device = model.device
    B = len(prompts)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    L = int(lens.max())
    pad_id = model.config.pad_token_id or 0
    ids = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, L - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
    pad = (L - lens)[:, None]
    slots = torch.arange(L, device=device)[None, :]
    valid = slots >= pad
    positions = (slots - pad).clamp(min=0)

    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    eos = torch.tensor(model.config.eos_token_id or [-1], device=device)

    caches = model.allocate_kv_caches(B, L + params.max_tokens) if use_cache else None
    logits = model(ids, positions, caches, valid, last_only=True)[:, -1]
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(params.max_tokens):
        tok = sample(logits, params, generator)
        for b, (t, d) in enumerate(zip(tok.tolist(), done.tolist())):  # one device sync per step
            if not d:
                out[b].append(t)
        if not params.ignore_eos:
            done |= torch.isin(tok, eos)
        if step == params.max_tokens - 1 or bool(done.all()):
            break
        new_pos = lens[:, None] + step
        valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)
        if use_cache:
            logits = model(tok[:, None], new_pos, caches, valid, last_only=True)[:, -1]
        else:
            ids = torch.cat([ids, tok[:, None]], dim=1)
            positions = torch.cat([positions, new_pos], dim=1)
            logits = model(ids, positions, None, valid, last_only=True)[:, -1]
    return out
    # END SOLUTION
