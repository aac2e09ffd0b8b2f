from __future__ import annotations

import pytest
import torch

from autograder.impl import Modules


@pytest.fixture
def zero() -> Modules:
    """The code under test: zero.partition, zero.comm, zero.adamw, zero.engine."""
    return Modules("zero")


@pytest.fixture
def seed(rng) -> int:
    """A fresh seed for the model's initial weights and the batches (printed by `rng`)."""
    return int(torch.randint(0, 2**20, (1,), generator=rng))
