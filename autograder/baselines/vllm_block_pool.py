"""vLLM's own v1 BlockPool (vllm/v1/core/block_pool.py), the block_manager speed baseline.

Its constructor changed across releases; this adapter tries the known signatures and reports
the version it could not drive instead of guessing.
"""
from __future__ import annotations

import inspect

from . import Baseline, register


@register("vllm.block_pool")
def block_pool() -> Baseline:
    name = "vllm.block_pool"
    try:
        import vllm
        from vllm.v1.core.block_pool import BlockPool
    except ImportError as e:
        return Baseline(name, "", False, f"vLLM's Python package is not importable ({e.name or e}); "
                        "install vllm to compare against its BlockPool")
    params = inspect.signature(BlockPool).parameters

    def make(num_blocks: int):
        """A pool with `num_blocks` free blocks: vLLM >= 0.25 reserves block 0 as its null block,
        so it is made one block larger there (the ids then run 1..num_blocks)."""
        kw = {"enable_caching": False}
        if "enable_kv_cache_events" in params:
            kw["enable_kv_cache_events"] = False
        for extra in ("hash_block_size", "block_size"):
            if extra in params and params[extra].default is inspect.Parameter.empty:
                kw[extra] = 16
        pool = BlockPool(num_blocks, **kw)
        reserved = num_blocks - pool.get_num_free_blocks()
        return BlockPool(num_blocks + reserved, **kw) if reserved > 0 else pool

    try:
        make(8)
    except Exception as e:  # noqa: BLE001
        return Baseline(name, "", False, f"vLLM {vllm.__version__} BlockPool has an unknown constructor: {e}")
    return Baseline(name, f"vLLM {vllm.__version__} v1 BlockPool", True, impl=make, version=vllm.__version__)
