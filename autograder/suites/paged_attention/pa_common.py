"""Input generator and reference for the paged-attention suite.

make_case builds a paged cache the way an engine would leave it: blocks of each sequence
scattered over a random permutation of physical blocks, every slot not holding a live token
(unused blocks, the tail of each last block, unused block-table entries' targets) filled with
NaN, so a kernel that reads past seq_len produces NaN and fails.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Case:
    query: torch.Tensor          # [num_seqs, num_heads, head_size]
    key_cache: torch.Tensor      # [num_blocks, block_size, num_kv_heads, head_size]
    value_cache: torch.Tensor
    block_tables: torch.Tensor   # [num_seqs, max_blocks] int32
    seq_lens: torch.Tensor       # [num_seqs] int32
    scale: float
    max_seq_len: int

    @property
    def kv_bytes(self) -> int:
        """Bytes of K and V the attention must read (live tokens only)."""
        Hkv, D = self.key_cache.shape[2:]
        return 2 * int(self.seq_lens.sum()) * Hkv * D * self.key_cache.element_size()


def make_case(seq_lens: list[int], num_heads: int, num_kv_heads: int, head_size: int, block_size: int,
              dtype: torch.dtype, device: str = "cpu", gen: torch.Generator | None = None, spare_blocks: int = 3,
              q_scale: float = 1.0, poison: bool = True) -> Case:
    gen = gen or torch.Generator().manual_seed(0)
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    max_blocks = max(blocks_per_seq) + 1  # one unused table column: its entry points at garbage
    num_blocks = sum(blocks_per_seq) + spare_blocks
    perm = torch.randperm(num_blocks, generator=gen)
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    fill = float("nan") if poison else 0.0
    key_cache = torch.full(shape, fill, dtype=dtype)
    value_cache = torch.full(shape, fill, dtype=dtype)
    tables = torch.randint(0, num_blocks, (len(seq_lens), max_blocks), generator=gen, dtype=torch.int32)
    used = 0
    for s, (n, nb) in enumerate(zip(seq_lens, blocks_per_seq)):
        tables[s, :nb] = perm[used:used + nb].to(torch.int32)
        used += nb
        idx = torch.arange(n)
        blk, off = tables[s, idx // block_size].long(), idx % block_size
        key_cache[blk, off] = torch.randn(n, num_kv_heads, head_size, generator=gen).to(dtype)
        value_cache[blk, off] = torch.randn(n, num_kv_heads, head_size, generator=gen).to(dtype)
    query = (torch.randn(len(seq_lens), num_heads, head_size, generator=gen) * q_scale).to(dtype)
    to = lambda t: t.to(device)  # noqa: E731
    return Case(to(query), to(key_cache), to(value_cache), to(tables), to(torch.tensor(seq_lens, dtype=torch.int32)),
                head_size ** -0.5, max(seq_lens))


def reference(case: Case, dtype=torch.float64) -> torch.Tensor:
    """Gather each sequence's live K/V and run softmax attention in float64 (float32 on GPU)."""
    q, kc, vc = case.query.to(dtype), case.key_cache, case.value_cache
    S, H, D = q.shape
    Hkv, bs = kc.shape[2], kc.shape[1]
    group = H // Hkv
    out = torch.empty(S, H, D, dtype=dtype, device=q.device)
    for s in range(S):
        n = int(case.seq_lens[s])
        idx = torch.arange(n, device=q.device)
        blk, off = case.block_tables[s, idx // bs].long(), idx % bs
        k = kc[blk, off].to(dtype).repeat_interleave(group, dim=1)  # [n, H, D]: head h reads KV head h // group
        v = vc[blk, off].to(dtype).repeat_interleave(group, dim=1)
        w = torch.softmax(torch.einsum("hd,nhd->hn", q[s], k) * case.scale, dim=-1)
        out[s] = torch.einsum("hn,nhd->hd", w, v)
    return out


def naive_torch(case: Case) -> torch.Tensor:
    """The naive PyTorch baseline: gather the blocks into a padded tensor, then SDPA."""
    S, H, D = case.query.shape
    Hkv, bs = case.key_cache.shape[2], case.key_cache.shape[1]
    L = case.max_seq_len
    idx = torch.arange(L, device=case.query.device)
    blk = case.block_tables[:, (idx // bs).clamp(max=case.block_tables.shape[1] - 1)].long()
    k = case.key_cache[blk, idx % bs].transpose(1, 2)   # [S, Hkv, L, D]
    v = case.value_cache[blk, idx % bs].transpose(1, 2)
    mask = idx[None, :] < case.seq_lens[:, None].long()
    k = torch.where(mask[:, None, :, None], k, 0)
    v = torch.where(mask[:, None, :, None], v, 0)
    out = torch.nn.functional.scaled_dot_product_attention(
        case.query[:, :, None], k, v, attn_mask=mask[:, None, None, :], scale=case.scale, enable_gqa=True)
    return out[:, :, 0]
