from __future__ import annotations

import pytest

from autograder.impl import Modules


@pytest.fixture
def eng() -> Modules:
    """The code under test: eng.llm, eng.scheduler, eng.model_runner, eng.sequence (with the student's
    kv_cache, block_manager and, on a GPU, paged_attention underneath)."""
    return Modules("engine")
