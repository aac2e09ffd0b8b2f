"""Helpers for the engine suite: the transformers reference and prompt generation."""
import sys

import torch

from autograder import SUITES_DIR
from llmsys.models import model_path

sys.path.insert(0, str(SUITES_DIR / "kv_cache"))
from kv_common import assert_same_greedy, hf_greedy, hf_model  # noqa: E402,F401


def prompts(gen, lengths, vocab=500):
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def check_against_transformers(outs, ps, max_tokens, what, name="tiny-qwen2"):
    hf = hf_model(name)
    assert len(outs) == len(ps), f"{what}: {len(outs)} outputs for {len(ps)} prompts"
    for i, (p, o) in enumerate(zip(ps, outs)):
        got = o.outputs[0].token_ids
        assert_same_greedy(hf, p, list(got), hf_greedy(hf, p, max_tokens), f"{what}, prompt {i} (length {len(p)})")


def path(name="tiny-qwen2"):
    return str(model_path(name))
