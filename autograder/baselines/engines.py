"""Whole-system baselines: vLLM's offline engine, DeepSpeed's ZeRO, and naive PyTorch.

Only detection lives here for vLLM's engine and DeepSpeed: the assignments that compare
against them (the serving runtime, ZeRO) drive them through their public APIs
(vllm.LLM.generate, deepspeed.initialize) in their own suites.
"""
from __future__ import annotations

from . import Baseline, _cuda, register


@register("vllm.engine")
def vllm_engine() -> Baseline:
    name = "vllm.engine"
    if (why := _cuda()):
        return Baseline(name, "", False, why)
    try:
        import vllm
        from vllm import LLM  # noqa: F401
    except ImportError as e:
        return Baseline(name, "", False, f"vLLM's Python package is not importable ({e.name or e})")
    return Baseline(name, f"vLLM {vllm.__version__} LLM.generate (offline, continuous batching)", True, impl=LLM,
                    version=vllm.__version__)


@register("deepspeed.zero")
def deepspeed_zero() -> Baseline:
    name = "deepspeed.zero"
    try:
        import deepspeed
    except ImportError as e:
        return Baseline(name, "", False, f"DeepSpeed is not installed ({e.name or e}): pip install deepspeed")
    return Baseline(name, f"DeepSpeed {deepspeed.__version__} ZeRO (deepspeed.initialize)", True, impl=deepspeed,
                    version=deepspeed.__version__)


@register("naive.paged_attention")
def naive_paged_attention() -> Baseline:
    """Gather each sequence's blocks into a padded tensor, then scaled_dot_product_attention."""
    import sys

    from .. import SUITES_DIR

    sys.path.insert(0, str(SUITES_DIR / "paged_attention"))
    from pa_common import naive_torch

    return Baseline("naive.paged_attention", "naive PyTorch: gather + SDPA", True, impl=naive_torch)
