"""The speed grid (vLLM's benchmark_paged_attention shapes) and GPU-native input generation."""
from __future__ import annotations

import torch

from pa_common import Case

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
