from __future__ import annotations

import pytest

from autograder.impl import Modules


@pytest.fixture
def bm() -> Modules:
    """The code under test: bm.block, bm.hashing, bm.block_pool, bm.kv_cache_manager (the trace
    replay is the grader's own: llmsys/simulate.py)."""
    return Modules("block_manager")
