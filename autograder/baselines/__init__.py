"""The things student code is measured against, by name, each with availability detection.

    b = baselines.get("vllm.paged_attention")
    if not b.available: report b.reason   # "not installed", "no GPU", "vLLM 0.25 has no paged_attention_v2"

Baselines are the real libraries where installed (vLLM's kernels and engine, DeepSpeed's ZeRO,
transformers); never a re-implementation of them. When one is missing, the comparison is not
made and the report says which and why.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Baseline:
    name: str
    description: str
    available: bool
    reason: str = ""          # why not available
    impl: Any = None          # the callable or module, when available
    version: str | None = None


_REGISTRY: dict[str, Callable[[], Baseline]] = {}


def register(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def get(name: str) -> Baseline:
    if name not in _REGISTRY:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name]()
    except Exception as e:  # noqa: BLE001 - a broken install is "unavailable, because ..."
        return Baseline(name, "", False, f"{type(e).__name__}: {e}")


def names() -> list[str]:
    return sorted(_REGISTRY)


def _cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no GPU"


@register("transformers.generate")
def _hf() -> Baseline:
    import transformers

    return Baseline("transformers.generate", "Hugging Face transformers generate() (static batching, its own KV cache)",
                    True, impl=transformers, version=transformers.__version__)


for _mod in ("vllm_kernels", "vllm_block_pool", "engines"):
    importlib.import_module(f"{__name__}.{_mod}")
