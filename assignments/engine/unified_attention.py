"""Attention for a step that mixes prompt chunks and decodes, over the paged cache, in Triton.
Given code: read it after assignment 3's decode kernel. It is the same online softmax, with a
tile of queries instead of one (vLLM's Triton backend calls its version `unified_attention`).

A step's tokens are flattened as in model_runner.py:
    query             [num_tokens, num_heads, head_size]  this step's queries (RoPE applied)
    key_cache, value_cache [num_blocks, block_size, num_kv_heads, head_size]  this step's K/V
                      are written already (reshape_and_cache runs first)
    query_start_loc   [num_seqs + 1] int32  sequence s owns query tokens [qsl[s], qsl[s + 1])
    seq_lens          [num_seqs] int32      tokens in the cache after this step
    block_tables      [num_seqs, max_blocks] int32
Sequence s's q_len = qsl[s + 1] - qsl[s] queries are its LAST q_len tokens: query i sits at
position seq_len - q_len + i and sees cached tokens 0 .. that position (causal).

One program per (sequence, tile of BLOCK_M queries, query head). It walks the sequence's
tokens in tiles of BLOCK_N, gathering each token through the block table, and stops at the
last position its queries can see: a decode (q_len 1) reads the whole sequence once, a prompt
chunk's early tiles read only its beginning.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _unified_attention_kernel(out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, qsl_ptr,
                              scale, stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_ct, stride_ch,
                              stride_bt,
                              QUERY_GROUP: tl.constexpr, HEAD_SIZE: tl.constexpr, HD_POW2: tl.constexpr,
                              BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              IEEE: tl.constexpr):
    """HD_POW2: head_size rounded up to a power of two (tl.arange needs one), lanes past it
    masked. IEEE: fp32 dot products in full precision (fp32 caches: the CPU tests)."""
    s = tl.program_id(0)
    tile = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(qsl_ptr + s)
    q_len = tl.load(qsl_ptr + s + 1) - q_start
    if tile * BLOCK_M < q_len:  # tiles past this sequence's queries have nothing to do
        seq_len = tl.load(seq_lens_ptr + s)
        context = seq_len - q_len                       # tokens cached before this step's queries
        m_idx = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the sequence's chunk
        q_pos = context + m_idx                         # its position in the sequence
        m_mask = m_idx < q_len
        d = tl.arange(0, HD_POW2)
        d_mask = d < HEAD_SIZE
        q = tl.load(q_ptr + (q_start + m_idx)[:, None] * stride_qt + h * stride_qh + d[None, :],
                    mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        kv_head = h // QUERY_GROUP
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HD_POW2], tl.float32)
        # causal: no query of this tile sees past the tile's last position
        end = tl.minimum(seq_len, context + (tile + 1) * BLOCK_M)
        for start in range(0, end, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            n_mask = n < end
            block = tl.load(block_tables_ptr + s * stride_bt + n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
            off = block * stride_cb + (n % BLOCK_SIZE) * stride_ct + kv_head * stride_ch
            kv_mask = n_mask[:, None] & d_mask[None, :]
            k = tl.load(k_cache_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_cache_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                qk = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                qk = tl.dot(q, tl.trans(k))
            # every query sees token 0, so each row's max is finite after the first tile
            qk = tl.where((n[None, :] <= q_pos[:, None]) & n_mask[None, :], qk * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.exp(qk - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(out_ptr + (q_start + m_idx)[:, None] * stride_ot + h * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def unified_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                      query_start_loc: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                      scale: float, max_query_len: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of every query token over its sequence's cached tokens.

    max_query_len: the longest q_len of the step, known on the host (it sizes the grid).
    Returns out [num_tokens, num_heads, head_size], like query, accumulated in fp32.
    """
    T, H, D = query.shape
    Hkv, bs = key_cache.shape[2], key_cache.shape[1]
    S = seq_lens.shape[0]
    out = torch.empty_like(query) if out is None else out
    # 16 x 16 tiles in the interpreter, where each tile is a Python loop over its lanes
    block_m, block_n = (16, 16) if INTERPRET else (64, 64)
    grid = (S, triton.cdiv(max_query_len, block_m), H)
    _unified_attention_kernel[grid](
        out, query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2), block_tables.stride(0),
        QUERY_GROUP=H // Hkv, HEAD_SIZE=D, HD_POW2=max(16, triton.next_power_of_2(D)), BLOCK_SIZE=bs,
        BLOCK_M=block_m, BLOCK_N=block_n, IEEE=query.dtype == torch.float32, num_warps=4, num_stages=2)
    return out
