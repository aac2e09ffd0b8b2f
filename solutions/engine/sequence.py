"""A request as the engine tracks it. Given."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from kv_cache.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: int = 0                     # order of arrival (first come, first served)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0         # tokens whose K/V are in the cache
    status: Status = Status.WAITING
    finish_reason: str | None = None     # "stop" (EOS) or "length" (max_tokens)
    num_preemptions: int = 0
    generator: torch.Generator | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed_tokens
