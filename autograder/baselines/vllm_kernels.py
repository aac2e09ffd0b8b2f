"""vLLM's own attention kernels, as the paged-attention assignment's speed baseline.

The decode baseline is the kernel vLLM itself runs for decode on this GPU and version:
  1. FLASH_ATTN: vLLM's FlashAttention (`vllm.vllm_flash_attn.flash_attn_varlen_func` with a
     block table), FA3 on Hopper, FA2 elsewhere, as vLLM selects it. Scheduler metadata is made
     once per case (`get_scheduler_metadata`), as vLLM makes it once per step, and at most 16 KV
     splits, vLLM's bound for decode under its default full CUDA graphs. Cache layout as ours.
  2. Without vLLM's Python package but with vLLM's compiled op library loaded (vLLM <= 0.24:
     `torch.ops._C.paged_attention_v2`): PagedAttention v2, the paper's kernel. Its cache layout
     differs from ours (key [num_blocks, num_kv_heads, head_size/x, block_size, x], value
     [num_blocks, num_kv_heads, head_size, block_size]); the adapter converts once, untimed.
Where both are present, PagedAttention v2 is timed beside FlashAttention ("vllm.paged_attention_v2").
Triton `unified_attention` is not used: vLLM runs it (TRITON_ATTN) with split-KV buffers this
adapter does not build, and without them it is several times slower than what vLLM runs.
`reshape_and_cache_flash` (layout as ours) is the baseline for reshape_and_cache.
"""
from __future__ import annotations

import functools

import torch

from . import Baseline, _cuda, register


@functools.cache
def _one(device: torch.device) -> torch.Tensor:
    """The k_scale / v_scale tensors vLLM's ops take, made once: building them per call would be
    a synchronous host-to-device copy inside the timed region."""
    return torch.ones((), dtype=torch.float32, device=device)


def _has_op(namespace: str, name: str) -> bool:
    try:
        return hasattr(getattr(torch.ops, namespace), name)
    except Exception:  # noqa: BLE001 - an unregistered op namespace raises RuntimeError on some torch versions
        return False


def _ops():
    """Import vllm._custom_ops if vLLM is installed; its op library may also be loaded already
    (torch.ops.load_library), which registers the same torch ops without the Python package."""
    try:
        import vllm._custom_ops  # noqa: F401
        import vllm

        return getattr(vllm, "__version__", "unknown")
    except ImportError:
        if _has_op("_C", "paged_attention_v2"):
            return "op library only"
        raise


def _version() -> str | None:
    try:
        return _ops()
    except ImportError:
        return None


@register("vllm.paged_attention")
def paged_attention() -> Baseline:
    name = "vllm.paged_attention"
    if (why := _cuda()):
        return Baseline(name, "", False, why)
    fa = _flash_attention()
    if fa is not None:
        return fa
    return paged_attention_v2(name)


@register("vllm.paged_attention_v2")
def paged_attention_v2(name: str = "vllm.paged_attention_v2") -> Baseline:
    if (why := _cuda()):
        return Baseline(name, "", False, why)
    version = _version()
    if version is not None and _has_op("_C", "paged_attention_v2"):
        return Baseline(name, f"vLLM {version} CUDA paged_attention_v2", True, impl=PagedAttentionV2(), version=version)
    if version is None:
        return Baseline(name, "", False, "vLLM is not installed (pip install vllm, on a CUDA machine)")
    return Baseline(name, "", False,
                    f"vLLM {version} has no paged_attention_v2 (removed in 0.25) and no FlashAttention for this GPU")


def _flash_attention() -> Baseline | None:
    """vLLM's FLASH_ATTN decode (FA3 on Hopper, FA2 elsewhere), if its package has it."""
    try:
        import vllm
        from vllm.vllm_flash_attn import flash_attn_varlen_func, get_scheduler_metadata
    except ImportError:
        return None
    fa_version = 2
    try:
        from vllm.vllm_flash_attn import is_fa_version_supported

        if torch.cuda.get_device_capability()[0] == 9 and is_fa_version_supported(3):
            fa_version = 3
        elif not is_fa_version_supported(2):
            return None
    except ImportError:
        pass
    return Baseline("vllm.paged_attention", f"vLLM {vllm.__version__} FLASH_ATTN (FlashAttention-{fa_version})", True,
                    impl=FlashAttention(flash_attn_varlen_func, get_scheduler_metadata, fa_version),
                    version=vllm.__version__)


@register("vllm.reshape_and_cache")
def reshape_and_cache() -> Baseline:
    name = "vllm.reshape_and_cache"
    if (why := _cuda()):
        return Baseline(name, "", False, why)
    version = _version()
    if version is None:
        return Baseline(name, "", False, "vLLM is not installed (pip install vllm, on a CUDA machine)")
    if not _has_op("_C_cache_ops", "reshape_and_cache_flash"):
        return Baseline(name, "", False, f"vLLM {version} has no _C_cache_ops.reshape_and_cache_flash")
    return Baseline(name, f"vLLM {version} reshape_and_cache_flash", True, impl=ReshapeAndCacheFlash(), version=version)


class PagedAttentionV2:
    """Calls vLLM's CUDA paged_attention_v2 on caches converted to its layout (once, untimed)."""

    PARTITION_SIZE = 512  # vLLM's _PARTITION_SIZE for v2

    def prepare(self, key_cache: torch.Tensor, value_cache: torch.Tensor):
        """Our [num_blocks, block_size, kv_heads, head] -> vLLM's native key/value cache layouts."""
        nb, bs, h, d = key_cache.shape
        x = 16 // key_cache.element_size()
        k = key_cache.view(nb, bs, h, d // x, x).permute(0, 2, 3, 1, 4).contiguous()
        v = value_cache.permute(0, 2, 3, 1).contiguous()
        return k, v

    def __call__(self, out, query, k_native, v_native, block_tables, seq_lens, scale, max_seq_len):
        num_seqs, num_heads, head_size = query.shape
        parts = (max_seq_len + self.PARTITION_SIZE - 1) // self.PARTITION_SIZE
        exp_sums = torch.empty(num_seqs, num_heads, parts, dtype=torch.float32, device=query.device)
        max_logits = torch.empty_like(exp_sums)
        tmp_out = torch.empty(num_seqs, num_heads, parts, head_size, dtype=query.dtype, device=query.device)
        block_size = v_native.shape[3]
        one = _one(query.device)
        torch.ops._C.paged_attention_v2(
            out, exp_sums, max_logits, tmp_out, query, k_native, v_native, k_native.shape[1], scale,
            block_tables, seq_lens, block_size, max_seq_len, None, "auto", one, one, 0, 0, 0, 64, 0)
        return out


class FlashAttention:
    """vLLM's FLASH_ATTN decode call: one query token per sequence, our cache layout. The step's
    metadata (query offsets, FA3's scheduler metadata) is made on the first call for a batch and
    reused, as vLLM makes it once per step for all layers; the timed loop's warm-up makes it."""

    MAX_SPLITS = 16  # vLLM's _DEFAULT_MAX_NUM_SPLITS_FOR_CUDA_GRAPH: decode runs in full CUDA graphs

    def __init__(self, varlen, scheduler_metadata, fa_version: int):
        self.varlen, self.scheduler_metadata, self.fa_version = varlen, scheduler_metadata, fa_version
        self.steps: dict = {}

    def prepare(self, key_cache, value_cache):
        return key_cache, value_cache

    def _step(self, query, key_cache, seq_lens, max_seq_len):
        key = (seq_lens.data_ptr(), seq_lens.shape[0], max_seq_len, query.dtype)
        if key not in self.steps:
            n, heads, head_size = query.shape
            cu = torch.arange(n + 1, dtype=torch.int32, device=query.device)
            meta = None
            if self.fa_version == 3:
                meta = self.scheduler_metadata(
                    batch_size=n, max_seqlen_q=1, max_seqlen_k=max_seq_len, num_heads_q=heads,
                    num_heads_kv=key_cache.shape[2], headdim=head_size, cache_seqlens=seq_lens, qkv_dtype=query.dtype,
                    cu_seqlens_q=cu, page_size=key_cache.shape[1], causal=True, window_size=(-1, -1),
                    num_splits=self.MAX_SPLITS)
            self.steps[key] = (cu, meta)
        return self.steps[key]

    def __call__(self, out, query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len):
        cu, meta = self._step(query, key_cache, seq_lens, max_seq_len)
        self.varlen(q=query, k=key_cache, v=value_cache, out=out, cu_seqlens_q=cu, max_seqlen_q=1, seqused_k=seq_lens,
                    max_seqlen_k=max_seq_len, softmax_scale=scale, causal=True, window_size=(-1, -1),
                    block_table=block_tables, softcap=0, scheduler_metadata=meta, fa_version=self.fa_version,
                    num_splits=self.MAX_SPLITS if self.fa_version == 3 else 0)
        return out


class ReshapeAndCacheFlash:
    def __call__(self, key, value, key_cache, value_cache, slot_mapping):
        one = _one(key.device)
        torch.ops._C_cache_ops.reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, "auto",
                                                       one, one)


class InLoop:
    """A baseline as `timing.compare_loops` calls it in the trusted worker: caches converted to the
    kernel's own layout once (untimed, as vLLM keeps its cache in that layout), then
    `(query, copy, block_tables, seq_lens, scale, max_seq_len, out)` per call, where `copy` picks
    one of the cache copies the loop rotates through (so that no call finds the last one's KV in L2)."""

    def __init__(self, impl, key_caches, value_caches):
        self.impl = impl
        self.caches = [impl.prepare(k, v) for k, v in zip(key_caches, value_caches)]

    def __call__(self, query, copy, block_tables, seq_lens, scale, max_seq_len, out):
        k, v = self.caches[copy]
        return self.impl(out, query, k, v, block_tables, seq_lens, scale, max_seq_len)
