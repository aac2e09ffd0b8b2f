from __future__ import annotations

import pytest

from autograder.impl import load

MODELS = ["tiny-qwen2", "tiny-llama"]  # GQA groups 2 and 4, with and without biases


class _Modules:
    """kv.cache, kv.attention, kv.model, kv.sampling, kv.generate: imported on first use, so a
    broken sampling.py costs only the sampling tests."""

    _files = {"cache": "kv_cache", "attention": "attention", "model": "model", "sampling": "sampling",
              "generate": "generate", "rope": "rope"}

    def __getattr__(self, name):
        return load("kv_cache", self._files[name])


@pytest.fixture
def kv() -> _Modules:
    """The code under test (the student's kv_cache package, or whatever --impl names)."""
    return _Modules()


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param
