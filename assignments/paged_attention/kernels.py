"""Paged attention in Triton: write new K/V into the paged cache, and decode attention over it.

Layouts (vLLM's "flash" layout, as reshape_and_cache_flash and unified_attention use):
    key, value            [num_tokens, num_kv_heads, head_size]      this step's new tokens
    key_cache, value_cache[num_blocks, block_size, num_kv_heads, head_size]
    slot_mapping          [num_tokens] int64; token t goes to block slot // block_size,
                          offset slot % block_size; -1 = skip this token (padding)
    query                 [num_seqs, num_heads, head_size]           one new token per sequence
    block_tables          [num_seqs, max_blocks_per_seq] int32       logical -> physical block
    seq_lens              [num_seqs] int32                           tokens in each sequence
Query head h reads KV head h // (num_heads // num_kv_heads) (grouped-query attention).

Never read a cache slot at or past seq_len: those slots (and the unused entries of a block
table) hold garbage, NaN in the tests. Masked loads (`mask=..., other=0`) are the way.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set by the grader), which
computes tl.dot on bf16 wrongly: bf16 is graded on the GPU only.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


# ----------------------------------------------------------------------------- write

@triton.jit
def _reshape_and_cache_kernel(key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_ptr,
                              stride_kt, stride_kh, stride_vt, stride_vh,
                              stride_cb, stride_ct, stride_ch,
                              NUM_KV_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                              HD_POW2: tl.constexpr):
    """One program per token: copy its [num_kv_heads, head_size] K and V into its slot.

    HD_POW2: num_kv_heads * head_size rounded up to a power of two (tl.arange needs one); the
    lanes past the real size are masked off.
    """
    tl.static_assert(
        False,
        "not implemented: paged_attention: _reshape_and_cache_kernel (paged_attention/kernels.py): slot = "
        "load(slot_ptr + t); skip if < 0; flatten (head, dim) into one arange; masked load, masked store")


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                      slot_mapping: torch.Tensor) -> None:
    """Write key/value [num_tokens, num_kv_heads, head_size] into the caches at slot_mapping.

    The caches are [num_blocks, block_size, num_kv_heads, head_size], same dtype as key.
    Tokens whose slot is -1 are skipped. Nothing else in the caches may change.
    """
    _check_cache(key_cache, value_cache)
    T, H, D = key.shape
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError("reshape_and_cache: key and value need a contiguous last (head_size) dimension")
    if key_cache.shape[2:] != (H, D) or key.dtype != key_cache.dtype:
        raise ValueError(f"reshape_and_cache: key {list(key.shape)} {key.dtype} does not fit cache "
                         f"{list(key_cache.shape)} {key_cache.dtype} "
                         "([num_blocks, block_size, num_kv_heads, head_size])")
    if slot_mapping.shape != (T,):
        raise ValueError(f"reshape_and_cache: slot_mapping must be [num_tokens={T}], got {list(slot_mapping.shape)}")
    if T == 0:
        return
    raise NotImplementedError(
        "paged_attention: reshape_and_cache (paged_attention/kernels.py): grid (num_tokens,); pass strides; HD_POW2 = "
        "triton.next_power_of_2(num_kv_heads * head_size)")


# ----------------------------------------------------------------------------- decode

@triton.jit
def _paged_decode_kernel(out_ptr, m_ptr, l_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
                         scale, partition_size,
                         stride_qs, stride_qh,
                         stride_os, stride_oh, stride_op,
                         stride_ms, stride_mh,
                         stride_cb, stride_ct, stride_ch,
                         stride_bts,
                         NUM_KV_HEADS: tl.constexpr, QUERY_GROUP: tl.constexpr, PADDED_GROUP: tl.constexpr,
                         HEAD_SIZE: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr,
                         SPLIT: tl.constexpr, IEEE: tl.constexpr):
    """Program (seq, kv_head, split): the QUERY_GROUP query heads of one KV head, over tokens
    [split * partition_size, min((split + 1) * partition_size, seq_len)), TILE_N at a time,
    with an online softmax in fp32.

    SPLIT=False: one split covers the sequence; write the normalised output to
        out[seq, head, :] (stride_op unused).
    SPLIT=True: write this split's normalised partial output to tmp out[seq, head, split, :]
        and its running max and sum to m[seq, head, split], l[seq, head, split]; a split with
        no tokens writes m = -inf, l = 0, out = 0.

    PADDED_GROUP: QUERY_GROUP rounded up to a power of two and to at least 16, because tl.dot
    needs every dimension >= 16 on a GPU (the extra rows are masked off). IEEE: fp32 inputs use
    input_precision="ieee" in tl.dot (exact fp32 products; the default would use TF32 on a GPU
    and miss the fp32 tolerance); fp16 / bf16 inputs use the tensor cores as they are.
    """
    tl.static_assert(
        False,
        "not implemented: paged_attention: _paged_decode_kernel (paged_attention/kernels.py): q tile [PADDED_GROUP, "
        "HEAD_SIZE]; per tile gather block ids, load K/V rows masked, s = dot(q, k^T) * scale, online softmax, acc += "
        "dot(p, v)")


@triton.jit
def _reduce_splits_kernel(out_ptr, tmp_ptr, m_ptr, l_ptr, seq_lens_ptr, partition_size,
                          stride_os, stride_oh, stride_ts, stride_th, stride_tp, stride_ms, stride_mh,
                          HEAD_SIZE: tl.constexpr, SPLITS_POW2: tl.constexpr):
    """Program (seq, head): combine the partial outputs of the splits that hold tokens.

    Each split s has a normalised output o_s, max logit m_s and sum l_s = sum(exp(logit - m_s)).
    With M = max_s m_s and w_s = l_s * exp(m_s - M): out = sum_s w_s * o_s / sum_s w_s.
    """
    tl.static_assert(
        False,
        "not implemented: paged_attention: _reduce_splits_kernel (paged_attention/kernels.py): n = cdiv(seq_len, "
        "partition_size) splits hold tokens; mask the rest; rescale each by exp(m_s - M) before summing")


def _check_cache(key_cache, value_cache):
    if key_cache.dim() != 4 or key_cache.shape != value_cache.shape or key_cache.dtype != value_cache.dtype:
        raise ValueError(f"caches must both be [num_blocks, block_size, num_kv_heads, head_size] of one dtype, got "
                         f"{list(key_cache.shape)} {key_cache.dtype} and {list(value_cache.shape)} {value_cache.dtype}")
    if key_cache.stride() != value_cache.stride() or key_cache.stride(-1) != 1:
        raise ValueError("key_cache and value_cache need the same strides and a contiguous head_size dimension")


def _check_decode(query, key_cache, value_cache, block_tables, seq_lens, out):
    _check_cache(key_cache, value_cache)
    S, H, D = query.shape
    Hkv = key_cache.shape[2]
    if D != key_cache.shape[3] or H % Hkv or query.dtype != key_cache.dtype or query.stride(-1) != 1:
        raise ValueError(f"query {list(query.shape)} {query.dtype} does not fit cache {list(key_cache.shape)} "
                         f"{key_cache.dtype}: need [num_seqs, num_heads (a multiple of {Hkv}), {key_cache.shape[3]}]")
    if block_tables.dim() != 2 or block_tables.shape[0] != S or block_tables.dtype != torch.int32:
        raise ValueError(f"block_tables must be [num_seqs={S}, max_blocks] int32, "
                         f"got {list(block_tables.shape)} {block_tables.dtype}")
    if seq_lens.shape != (S,) or seq_lens.dtype != torch.int32:
        raise ValueError(f"seq_lens must be [num_seqs={S}] int32, got {list(seq_lens.shape)} {seq_lens.dtype}")
    if out is not None and (out.shape != query.shape or out.dtype != query.dtype):
        raise ValueError(f"out must be like query: {list(query.shape)} {query.dtype}")


def _tile_n(block_size: int) -> int:
    """Tokens per tile of the decode kernel. Independent of block_size (a tile may span several
    KV blocks, or part of one: the kernel gathers each token's block); 64 on a GPU, 16 in the
    interpreter, where every tile is a slow Python loop over its lanes."""
    return 16 if INTERPRET else 64


def paged_attention_decode(query, key_cache, value_cache, block_tables, seq_lens, scale: float,
                           out: torch.Tensor | None = None, *, tile_n: int | None = None, num_warps: int = 4,
                           num_stages: int = 2) -> torch.Tensor:
    """Decode attention, one program per (sequence, KV head) over the whole sequence.

    Returns out [num_seqs, num_heads, head_size] (written into `out` when given), each row
    softmax(scale * q . K^T) V over the sequence's seq_lens[i] cached tokens, accumulated in fp32.
    """
    _check_decode(query, key_cache, value_cache, block_tables, seq_lens, out)
    out = torch.empty_like(query) if out is None else out
    raise NotImplementedError(
        "paged_attention: paged_attention_decode (paged_attention/kernels.py): grid (num_seqs, num_kv_heads, 1), "
        "SPLIT=False, partition_size larger than any sequence")


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int) -> int:
    """How many splits of each sequence to run in parallel ("flash-decoding").

    Without splitting there are num_seqs * num_kv_heads programs: with few long sequences that
    leaves most of the GPU's num_sms multiprocessors idle. Split each sequence so that there
    are a few programs per multiprocessor, but keep every split at least 128 tokens (two tiles:
    each split costs a partial output and a share of the reduction). 1 means: do not split.
    """
    raise NotImplementedError(
        "paged_attention: choose_num_splits (paged_attention/kernels.py): with a program per SM, still cut long "
        "sequences into <= 1024-token splits (ragged batches balance); else aim for ~4 per SM, each split >= 128 "
        "tokens")


def paged_attention_decode_split_k(query, key_cache, value_cache, block_tables, seq_lens, scale: float,
                                   num_splits: int, max_seq_len: int | None = None,
                                   out: torch.Tensor | None = None, *, tile_n: int | None = None,
                                   num_warps: int = 4, num_stages: int = 2) -> torch.Tensor:
    """Split-K decode: each sequence's tokens are cut into num_splits partitions of equal size
    (a multiple of the tile), processed in parallel, then combined by _reduce_splits_kernel.

    max_seq_len: an upper bound of seq_lens (pass it to avoid a device-to-host sync; computed
    from seq_lens when None). Same result as paged_attention_decode.
    """
    _check_decode(query, key_cache, value_cache, block_tables, seq_lens, out)
    out = torch.empty_like(query) if out is None else out
    raise NotImplementedError(
        "paged_attention: paged_attention_decode_split_k (paged_attention/kernels.py): partition = "
        "round_up(cdiv(max_seq_len, num_splits), TILE_N); tmp [S, H, splits, D] fp32, m and l [S, H, splits]; decode "
        "kernel with SPLIT=True, then the reduction")


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale: float, max_seq_len: int,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """The decode attention the engine calls: picks the single-pass or the split-K kernel.

    max_seq_len: an upper bound of seq_lens, known on the host (no device sync).
    """
    raise NotImplementedError(
        "paged_attention: paged_attention (paged_attention/kernels.py): choose_num_splits(...) with the device's "
        "multiprocessor count; 1 -> paged_attention_decode, else split-K")
