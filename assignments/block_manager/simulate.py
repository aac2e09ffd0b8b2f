"""Replay a request trace through an allocator and measure how much reserved KV memory holds
live tokens. Given (the grader and the benchmark use it; so can you).

Each step: admit waiting requests first-come-first-served while the allocator accepts them
(a request's prompt gets its slots at admission), then every running request appends one
generated token; a request that reaches its output length leaves and frees its memory. When
the paged allocator runs out of blocks, the most recently admitted request is preempted
(freed, and put back at the front of the queue to be recomputed), as vLLM does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Timeline:
    live_tokens: list[int] = field(default_factory=list)
    reserved_tokens: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    preemptions: int = 0
    finished: int = 0

    @property
    def efficiency(self) -> float:
        """Share of reserved KV slots that held live tokens, averaged over time."""
        return sum(self.live_tokens) / max(1, sum(self.reserved_tokens))


def _requests(trace: dict, limit: int | None, seed: int):
    rng = random.Random(seed)
    reqs = trace["requests"][:limit]
    return [dict(r, id=f"r{i}", prompt=[rng.randrange(3, 30000) for _ in range(r["prompt_len"])])
            for i, r in enumerate(reqs)]


def replay_paged(manager_cls, trace: dict, num_token_slots: int, block_size: int = 16, limit: int | None = None,
                 seed: int = 0) -> Timeline:
    mgr = manager_cls(num_token_slots // block_size, block_size, enable_prefix_caching=False, watermark=0.01)
    waiting, running, tl, step = list(_requests(trace, limit, seed)), [], Timeline(), 0
    generated: dict[str, int] = {}
    while waiting or running:
        while waiting and waiting[0]["arrival_step"] <= step:
            r = waiting[0]
            tokens = r["prompt"] + [7] * generated.get(r["id"], 0)
            if mgr.allocate(r["id"], tokens) is None:
                break
            running.append(waiting.pop(0))
        for r in list(running):
            if r not in running:
                continue
            while mgr.append_slots(r["id"], [7]) is None:  # out of blocks: preempt the newest
                victim = running.pop()
                mgr.free(victim["id"])
                waiting.insert(0, victim)
                tl.preemptions += 1
                if victim is r:
                    break
            else:
                generated[r["id"]] = generated.get(r["id"], 0) + 1
                if generated[r["id"]] >= r["output_len"]:
                    running.remove(r)
                    mgr.free(r["id"])
                    tl.finished += 1
        tl.live_tokens.append(sum(mgr.num_tokens(r["id"]) for r in running))
        tl.reserved_tokens.append((mgr.pool.num_blocks - mgr.get_num_free_blocks()) * block_size)
        tl.running.append(len(running))
        step += 1
    return tl


def replay_naive(allocator_cls, trace: dict, num_token_slots: int, limit: int | None = None, seed: int = 0) -> Timeline:
    alloc = allocator_cls(num_token_slots, trace["max_model_len"])
    waiting, running, tl, step = list(_requests(trace, limit, seed)), [], Timeline(), 0
    length: dict[str, int] = {}
    while waiting or running:
        while waiting and waiting[0]["arrival_step"] <= step and alloc.can_allocate():
            r = waiting.pop(0)
            alloc.allocate(r["id"])
            length[r["id"]] = r["prompt_len"]
            running.append(r)
        for r in list(running):
            length[r["id"]] += 1
            if length[r["id"]] - r["prompt_len"] >= r["output_len"]:
                running.remove(r)
                alloc.free(r["id"])
                tl.finished += 1
        tl.live_tokens.append(sum(length[r["id"]] for r in running))
        tl.reserved_tokens.append(alloc.reserved_slots())
        tl.running.append(len(running))
        step += 1
    return tl
