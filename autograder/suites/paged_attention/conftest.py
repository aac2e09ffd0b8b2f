from __future__ import annotations

import pytest

from autograder.impl import Modules


@pytest.fixture
def pa() -> Modules:
    """The code under test: pa.kernels."""
    return Modules("paged_attention")
