"""The course library: what the assignments share that is not grading.

Submission code may import it (the grader's worker has it, and nothing of `autograder`):

    from llmsys.models import model_path   # the course's tiny random-weight models, built from data/models/
    from llmsys import cdiv                # ceil(a / b) for ints: blocks for n tokens, programs for n rows
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LLMSYS_DATA") or REPO_ROOT / "data")  # the grader's worker is told where


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for non-negative ints: `cdiv(n_tokens, block_size)` blocks hold n_tokens."""
    return -(-a // b)
