"""Shared fixtures of the graded suites. Student code is imported only inside tests (via
autograder.impl.load), so a submission that does not import still gets every test listed,
each failing with the import error."""
from __future__ import annotations

import pytest
import torch

from autograder.checks import run_seed, seed_for_test
from autograder.pytest_plugin import grade  # noqa: F401  (the `grade` fixture)


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def rng() -> torch.Generator:
    """A generator seeded from the grading run's seed and the test (autograder.checks.seed_for_test):
    new inputs every run, so answers cannot be memorised; the same with `grade --seed N`, so a
    failure can be replayed."""
    seed = seed_for_test("rng")
    print(f"input seed: {seed} (run seed {run_seed()})")
    return torch.Generator().manual_seed(seed)
