"""Iteration-level (continuous) batching, as vLLM v1 schedules: every step, each request gets
the tokens it needs next (a whole or partial prompt, or one decode token) within a token
budget; finished requests leave and new ones join between any two steps.

One step's plan is a list of ScheduledSeq: the sequence, how many of its tokens to compute
now (its tokens [num_computed_tokens, num_computed_tokens + num_tokens)), and their cache
slots. A sequence whose last scheduled token is its last token gets a new token sampled.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sequence import Sequence, Status


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int          # tokens of this sequence computed this step (>= 1)
    slot_mapping: list[int]  # their cache slots, one per token


class Scheduler:
    def __init__(self, kv_manager, max_num_seqs: int, max_num_batched_tokens: int):
        """Given. kv_manager: a block_manager.kv_cache_manager.KVCacheManager."""
        self.kv = kv_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []       # in admission order: the last is the newest
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Given. A sequence is done: its blocks go back to the pool."""
        seq.status, seq.finish_reason = Status.FINISHED, reason
        self.running.remove(seq)
        self.kv.free(seq.seq_id)

    def preempt(self, seq: Sequence) -> None:
        """Preemption by recompute: free all of `seq`'s blocks, forget its computed tokens and put
        it at the FRONT of the waiting queue (it arrived before everything waiting). Its tokens
        so far (prompt + output) are its prompt when it is admitted again."""
        # BEGIN SOLUTION hint: remove from running; kv.free; num_computed_tokens = 0; status WAITING;
        #   waiting.appendleft; count it
        self.running.remove(seq)
        self.kv.free(seq.seq_id)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        # END SOLUTION

    def schedule(self) -> list[ScheduledSeq]:
        """Plan one step within max_num_batched_tokens tokens and max_num_seqs sequences.

        1. Running sequences first, oldest first: each gets min(its uncomputed tokens, budget
           left) new slots via kv.append_slots (a decode step: 1; a partly computed prompt: its
           next chunk). If the pool has no room, preempt the NEWEST running sequence (possibly
           this one) and retry.
        2. Then, only if nothing was preempted this step, admit waiting sequences first come,
           first served while the budget and max_num_seqs allow: look up the cached prefix
           (kv.get_computed_blocks), allocate slots for the cached prefix plus as many further
           tokens as the budget allows (chunked prefill), set num_computed_tokens to the cache
           hit, and move the sequence to running. Stop at the first that does not fit.
        Every scheduled sequence computes at least 1 token.
        """
        # BEGIN SOLUTION hint: budget = max_num_batched_tokens; running loop with append_slots / preempt newest;
        #   then FCFS admission with kv.allocate(seq_id, tokens[:hit + n])
        budget = self.max_num_batched_tokens
        plan: list[ScheduledSeq] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed, budget)
            start = self.kv.num_tokens(seq.seq_id)
            new = seq.token_ids[start:seq.num_computed_tokens + n]
            slots = self.kv.append_slots(seq.seq_id, new)
            while slots is None:
                victim = self.running[-1]
                self.preempt(victim)
                preempted = True
                if victim is seq:
                    break
                slots = self.kv.append_slots(seq.seq_id, new)
            if slots is None:
                break
            plan.append(ScheduledSeq(seq, n, slots))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            hit = len(self.kv.get_computed_blocks(seq.token_ids)) * self.kv.block_size
            n = min(seq.num_tokens - hit, budget)
            alloc = self.kv.allocate(seq.seq_id, seq.token_ids[:hit + n])
            if alloc is None:
                break
            self.waiting.popleft()
            seq.num_computed_tokens = alloc.num_computed_tokens
            seq.status = Status.RUNNING
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, len(alloc.slot_mapping), alloc.slot_mapping))
            budget -= len(alloc.slot_mapping)
        return plan
        # END SOLUTION
