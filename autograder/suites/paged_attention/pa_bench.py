"""The speed grid (vLLM's benchmark_paged_attention shapes), GPU-native input generation, and
the shared-memory copies of a case that timing.compare_loops runs on."""
from __future__ import annotations

import math

import torch

from autograder import timing
from autograder.remote import client
from pa_common import Case

# A run of the timed loop is about RUN_MS of GPU work, so that the grader's round trip around it
# (a fraction of a millisecond) is a few percent at most, and taken off by calibration anyway.
RUN_MS = 25.0
# reshape_and_cache: calls per run; each call writes its own slots, so the cache holds them all
RESHAPE_CALLS = {256: 2048, 8192: 128}

NUM_HEADS, NUM_KV_HEADS, HEAD_SIZE, BLOCK_SIZE = 32, 8, 128, 16
# (name, seq_lens generator): fixed (batch, context) pairs from (1, 4096) to (256, 1024), plus ragged
GRID = [
    ("b1-c4096", lambda g: [4096]),
    ("b8-c4096", lambda g: [4096] * 8),
    ("b32-c2048", lambda g: [2048] * 32),
    ("b64-c1024", lambda g: [1024] * 64),
    ("b256-c1024", lambda g: [1024] * 256),
    ("b8-c16384", lambda g: [16384] * 8),
    ("ragged-b64-c1to4096", lambda g: torch.randint(1, 4097, (64,), generator=g).tolist()),
]


def gpu_case(seq_lens: list[int], dtype: torch.dtype, gen: torch.Generator, spare: int = 64) -> Case:
    """Random K/V for every block (fast on the GPU), blocks scattered by a random permutation."""
    dev = "cuda"
    nbs = [-(-n // BLOCK_SIZE) for n in seq_lens]
    num_blocks = sum(nbs) + spare
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    g = torch.Generator(device=dev).manual_seed(seed)
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE)
    kc = torch.randn(shape, generator=g, device=dev, dtype=dtype)
    vc = torch.randn(shape, generator=g, device=dev, dtype=dtype)
    perm = torch.randperm(num_blocks, generator=g, device=dev).to(torch.int32)
    tables = torch.zeros(len(seq_lens), max(nbs), dtype=torch.int32, device=dev)
    used = 0
    for s, nb in enumerate(nbs):
        tables[s, :nb] = perm[used:used + nb]
        used += nb
    q = torch.randn(len(seq_lens), NUM_HEADS, HEAD_SIZE, generator=g, device=dev, dtype=dtype)
    return Case(q, kc, vc, tables, torch.tensor(seq_lens, dtype=torch.int32, device=dev), HEAD_SIZE ** -0.5, max(seq_lens))


def sample_rows(case: Case, rows: list[int]) -> Case:
    idx = torch.tensor(rows, device=case.query.device)
    return Case(case.query[idx], case.key_cache, case.value_cache, case.block_tables[idx], case.seq_lens[idx],
                case.scale, case.max_seq_len)


def calls_per_run(kv_bytes: int) -> int:
    """Calls in one timed run: about RUN_MS of work at H100 bandwidth, between 8 and 2,000."""
    est_ms = kv_bytes / 2.5e9 + 0.005
    return max(8, min(2000, round(RUN_MS / est_ms)))


def cache_copies(key_cache: torch.Tensor) -> int:
    """Copies of the K/V caches a run rotates through, so that together they are three times the
    L2 cache: no call finds the previous one's KV still in L2 (the flush `compare` does)."""
    l2 = getattr(torch.cuda.get_device_properties(key_cache.device), "L2_cache_size", 50 << 20) or 50 << 20
    return max(1, math.ceil(3 * l2 / (2 * key_cache.numel() * key_cache.element_size())))


class SharedCase:
    """One contender's copy of a case in memory its worker maps (client.device_tensor): the caches
    `copies` times, and one query and one output per call of a run, [calls, num_seqs, heads, head]."""

    def __init__(self, case: Case, calls: int, copies: int):
        def shared(t: torch.Tensor, times: int | None = None) -> torch.Tensor:
            out = client.device_tensor(((times,) if times else ()) + tuple(t.shape), t.dtype)
            out.copy_(t if times is None else t.expand(times, *t.shape))
            return out

        self.key_caches = shared(case.key_cache, copies)
        self.value_caches = shared(case.value_cache, copies)
        self.block_tables = shared(case.block_tables)
        self.seq_lens = shared(case.seq_lens)
        self.query = client.device_tensor((calls,) + tuple(case.query.shape), case.query.dtype)
        self.out = client.device_tensor((calls,) + tuple(case.query.shape), case.query.dtype)
        self.calls = calls

    def loop(self, fn, call) -> timing.Loop:
        """The timed loop of fn: call(self, i) gives the i-th call's (args, kwargs)."""
        return timing.Loop(fn, [call(self, i) for i in range(self.calls)], self.query.copy_, [self.out])
