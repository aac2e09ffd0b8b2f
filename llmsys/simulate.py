"""Replay a request trace through a KV-cache allocator and measure how much reserved KV memory
holds live tokens (assignment 2's memory-efficiency figure, the vLLM paper's Figure 2).

Each step: admit waiting requests first-come-first-served while the allocator accepts them (a
request's prompt gets its slots at admission), then every running request appends one generated
token; a request that reaches its output length leaves and frees its memory. When the paged
allocator runs out of blocks, the most recently admitted request is preempted (freed, and put
back at the front of the queue to be recomputed), as vLLM does.

The grader runs this file, on its own side of the sandbox, against the student's manager (a
proxy: every call is a request to the worker). So it counts what it can itself: the tokens each
running request holds are counted here, and the reserved blocks are the larger of what the
manager's block tables hold (checked: one block per `block_size` tokens, no block in two tables,
no more blocks than the pool has) and what the pool says is no longer free (so a leak shows). A
step's appends go out as one request (`call_each`); a refused one is retried, preempting the
newest request, one call at a time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from llmsys import cdiv


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


class NaiveAllocator:
    """The allocator paging replaces, for comparison: each admitted request reserves
    max_model_len contiguous token slots up front (it cannot know how long its output will be),
    as systems before vLLM did. Slots reserved but not yet filled are wasted; with real length
    distributions that is most of them."""

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


class SimulationError(AssertionError):
    """The manager's answers contradict what the simulation counted (names the step and request)."""


def _requests(trace: dict, limit: int | None, seed: int):
    rng = random.Random(seed)
    reqs = trace["requests"][:limit]
    return [dict(r, id=f"r{i}", prompt=[rng.randrange(3, 30000) for _ in range(r["prompt_len"])])
            for i, r in enumerate(reqs)]


def _call_each(obj, name: str, argslist: list[tuple]) -> list:
    """`[obj.name(*a) for a in argslist]`, in one request when obj lives in a grader's worker."""
    try:
        from autograder.remote.client import call_each  # the grader's side: proxies of a worker's objects
    except ImportError:  # in a worker, or without the grader: plain objects
        return [getattr(obj, name)(*a) for a in argslist]
    return call_each(obj, name, argslist)


def _reserved_blocks(mgr, running: list[dict], held: dict[str, int], block_size: int, num_blocks: int,
                     step: int) -> int:
    """Blocks the running requests hold, from the manager's block tables, checked against the
    tokens counted here; or the pool's own count of blocks not free, if that is larger."""
    ids = [r["id"] for r in running]
    tables = _call_each(mgr, "get_block_table", [(i,) for i in ids])
    seen: set[int] = set()
    for i, table in zip(ids, tables):
        want = cdiv(held[i], block_size)
        if type(table) is not list or len(table) != want:
            raise SimulationError(f"step {step}: request {i} holds {held[i]} tokens, so {want} blocks of "
                                  f"{block_size}; its block table has {len(table) if type(table) is list else table!r}")
        for b in table:
            if type(b) is not int or not 0 <= b < num_blocks or b in seen:
                raise SimulationError(f"step {step}: block {b!r} of request {i} is outside the pool's {num_blocks} "
                                      "blocks or in another request's table too (prefix caching is off here)")
            seen.add(b)
    used = num_blocks - mgr.get_num_free_blocks()
    return max(len(seen), used if type(used) is int else 0)


def replay_paged(manager_cls, trace: dict, num_token_slots: int, block_size: int = 16, limit: int | None = None,
                 seed: int = 0, max_idle_steps: int = 1000) -> Timeline:
    """The trace through `manager_cls(num_blocks, block_size, enable_prefix_caching=False,
    watermark=0.01)` (a KVCacheManager). Stops early, with fewer requests finished, after
    `max_idle_steps` steps in a row with nothing running (a manager that never admits)."""
    num_blocks = num_token_slots // block_size
    mgr = manager_cls(num_blocks, block_size, enable_prefix_caching=False, watermark=0.01)
    waiting, running, tl, step, idle = list(_requests(trace, limit, seed)), [], Timeline(), 0, 0
    generated: dict[str, int] = {}
    held: dict[str, int] = {}  # tokens each running request holds, counted here
    while (waiting or running) and idle < max_idle_steps:
        while waiting and waiting[0]["arrival_step"] <= step:
            r = waiting[0]
            tokens = r["prompt"] + [7] * generated.get(r["id"], 0)
            if mgr.allocate(r["id"], tokens) is None:
                break
            held[r["id"]] = len(tokens)
            running.append(waiting.pop(0))
        got = _call_each(mgr, "append_slots", [(r["id"], [7]) for r in running])
        for r, slots in zip(list(running), got):
            if r not in running:  # preempted earlier in this step: what it appended is gone with it
                continue
            while slots is None:  # out of blocks: preempt the newest, retry
                victim = running.pop()
                mgr.free(victim["id"])
                held.pop(victim["id"])
                waiting.insert(0, victim)
                tl.preemptions += 1
                if victim is r:
                    break
                slots = mgr.append_slots(r["id"], [7])
            if slots is None:
                continue
            held[r["id"]] += 1
            generated[r["id"]] = generated.get(r["id"], 0) + 1
            if generated[r["id"]] >= r["output_len"]:
                running.remove(r)
                mgr.free(r["id"])
                held.pop(r["id"])
                tl.finished += 1
        idle = 0 if running else idle + 1
        tl.live_tokens.append(sum(held[r["id"]] for r in running))
        tl.reserved_tokens.append(_reserved_blocks(mgr, running, held, block_size, num_blocks, step) * block_size)
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
