"""Turning logits into the next token: greedy, temperature, top-k, top-p (nucleus), with a seed.

The conventions are vLLM's (and transformers'): temperature first, then top-k, then top-p on
what is left; temperature 0 means greedy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    """vLLM's SamplingParams, the fields this course uses.

    temperature: 0 = greedy (argmax); otherwise logits are divided by it before softmax.
    top_p: keep the smallest set of most likely tokens whose probability adds up to >= top_p
           (1.0 = off).
    top_k: keep the k most likely tokens (0 or -1 = off).
    max_tokens: the most new tokens per sequence.
    seed: makes sampling reproducible (same seed, same prompts -> same tokens).
    ignore_eos: keep generating after the end-of-sequence token.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (off) or positive, got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def apply_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set the logits of tokens outside the top-k / top-p sets to -inf.

    logits: [batch, vocab] float32 (already divided by the temperature).
    Returns a new [batch, vocab] tensor; `logits` is not modified.

    Top-k keeps the k largest logits per row (top_k <= 0: keep all). Then top-p, over the
    softmax of what top-k kept: sort descending, and keep a token if the probability of the
    tokens strictly before it is < top_p, so the most likely token is always kept and the
    kept set is the smallest whose mass reaches top_p.
    """
    raise NotImplementedError(
        "kv_cache: apply_top_k_top_p (kv_cache/sampling.py): sort once descending; mask ranks >= top_k; cumulative "
        "softmax minus own prob >= top_p is dropped; scatter back")


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row.

    logits: [batch, vocab] (any float dtype; work in float32).
    generator: a torch.Generator on logits' device (seeded by the caller), or None for the
        global RNG. Draw with torch.multinomial(..., generator=generator) so a seed reproduces.
    Returns: [batch] int64 token ids.
    """
    raise NotImplementedError(
        "kv_cache: sample (kv_cache/sampling.py): temperature 0 -> argmax; else logits / temperature -> "
        "apply_top_k_top_p -> softmax -> multinomial")
