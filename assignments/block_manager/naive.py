"""The allocator paging replaces. Given, for comparison.

Each admitted request reserves max_model_len contiguous token slots up front (it cannot know
how long its output will be), as systems before vLLM did. Slots reserved but not yet filled
are wasted; with real length distributions that is most of them.
"""
from __future__ import annotations


class NaiveAllocator:
    def __init__(self, num_token_slots: int, max_model_len: int):
        self.max_model_len = max_model_len
        self.num_chunks = num_token_slots // max_model_len
        self.free_chunks = list(range(self.num_chunks))
        self.chunk_of: dict[str, int] = {}

    def can_allocate(self) -> bool:
        return bool(self.free_chunks)

    def allocate(self, seq_id: str) -> int:
        """Reserve a chunk; returns its first slot."""
        chunk = self.free_chunks.pop(0)
        self.chunk_of[seq_id] = chunk
        return chunk * self.max_model_len

    def free(self, seq_id: str) -> None:
        self.free_chunks.append(self.chunk_of.pop(seq_id))

    def reserved_slots(self) -> int:
        return len(self.chunk_of) * self.max_model_len
