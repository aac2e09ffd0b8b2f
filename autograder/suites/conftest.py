"""Shared fixtures of the graded suites. Student code is imported only inside tests (via
autograder.impl.load), so a submission that does not import still gets every test listed,
each failing with the import error."""
from __future__ import annotations

import random

import pytest
import torch

from autograder.pytest_plugin import grade  # noqa: F401  (the `grade` fixture)


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def rng() -> torch.Generator:
    """A generator with a seed drawn fresh each run (printed on failure), so answers cannot be memorised."""
    seed = random.SystemRandom().randrange(2**31)
    print(f"input seed: {seed}")
    return torch.Generator().manual_seed(seed)
