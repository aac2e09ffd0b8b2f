from __future__ import annotations

import pytest

from autograder.impl import Modules

MODELS = ["tiny-qwen2", "tiny-llama"]  # GQA groups 2 and 4, with and without biases


@pytest.fixture
def kv() -> Modules:
    """The code under test: kv.cache (kv_cache.py), kv.attention, kv.model, kv.sampling, kv.generate."""
    return Modules("kv_cache", {"cache": "kv_cache"})


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param
