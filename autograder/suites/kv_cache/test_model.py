"""The cached decoder against transformers' full forward, step by step.

Tolerances: float32 logits within atol 1e-4, rtol 1e-4, relative norm 1e-5 of transformers'
float32 forward; bfloat16 (the weights rounded to bf16) within relative norm 3e-2 of it.
"""
import pytest
import torch

from autograder.checks import assert_close, poison_
from autograder.remote.client import writable
from llmsys.models import model_path

from autograder.fixtures.kv_cache import hf_model, random_prompt


def decode_with_cache(model, ids, prefill_len, caches, kv_valid=None, positions=None):
    """Prefill ids[:, :prefill_len], then feed one token at a time. Returns logits [B, T, V]."""
    B, T = ids.shape
    positions = torch.arange(T)[None].expand(B, T) if positions is None else positions
    valid = kv_valid if kv_valid is not None else torch.ones(B, T, dtype=torch.bool)
    outs = [model(ids[:, :prefill_len], positions[:, :prefill_len], caches, valid[:, :prefill_len])]
    for t in range(prefill_len, T):
        outs.append(model(ids[:, t:t + 1], positions[:, t:t + 1], caches, valid[:, :t + 1]))
    return torch.cat(outs, dim=1)


@pytest.mark.points(3)
def test_decode_logits_match_transformers(kv, rng, model_name):
    """Logits at every decode step equal transformers' forward over the whole sequence (fp32)."""
    model = kv.model.load_model(model_path(model_name))
    hf = hf_model(model_name)
    n = int(torch.randint(5, 40, (1,), generator=rng))
    ids = torch.tensor([random_prompt(rng, n + 12, model.config.vocab_size)])
    caches = model.allocate_kv_caches(1, n + 12)
    for c in caches:  # whatever is not written yet is NaN: reading it fails
        c.k, c.v = writable(poison_(c.k), poison_(c.v))  # assigned: a tensor comes back as a copy
    with torch.no_grad():
        got = decode_with_cache(model, ids, n, caches)
        want = hf(ids).logits
    for t in range(n - 1, ids.shape[1]):
        assert_close(got[:, t], want[:, t], what=f"{model_name} logits at position {t} (prompt {n}, step {t - n + 1})")


@pytest.mark.points(2)
def test_decode_logits_bf16(kv, rng, model_name):
    """The same in bfloat16 against the float32 reference, relative norm within 3e-2."""
    model = kv.model.load_model(model_path(model_name), dtype=torch.bfloat16)
    hf = hf_model(model_name)
    n = int(torch.randint(5, 30, (1,), generator=rng))
    ids = torch.tensor([random_prompt(rng, n + 8, model.config.vocab_size)])
    caches = model.allocate_kv_caches(1, n + 8)
    assert caches[0].k.dtype == torch.bfloat16, "caches must take the model's dtype"
    with torch.no_grad():
        got = decode_with_cache(model, ids, n, caches)
        want = hf(ids).logits
    assert got.dtype == torch.float32, "the model returns float32 logits"
    assert_close(got[:, n - 1:], want[:, n - 1:], what=f"{model_name} bf16 logits", atol=0.15, rtol=0.05, rel_norm=3e-2)


@pytest.mark.points(2)
def test_left_padded_batch(kv, rng, model_name):
    """Rows of different lengths, left-padded with kv_valid and per-row positions, equal each row alone."""
    model = kv.model.load_model(model_path(model_name))
    hf = hf_model(model_name)
    lens = [int(x) for x in torch.randint(1, 20, (3,), generator=rng)] + [20]
    steps, L = 6, max(lens)
    rows = [random_prompt(rng, n + steps, model.config.vocab_size) for n in lens]
    B, T = len(rows), L + steps
    ids = torch.zeros(B, T, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    positions = torch.zeros(B, T, dtype=torch.long)
    for b, (row, n) in enumerate(zip(rows, lens)):
        pad = L - n
        ids[b, pad:] = torch.tensor(row)
        valid[b, pad:] = True
        positions[b, pad:] = torch.arange(n + steps)
    caches = model.allocate_kv_caches(B, T)
    with torch.no_grad():
        got = decode_with_cache(model, ids, L, caches, valid, positions)
        for b, (row, n) in enumerate(zip(rows, lens)):
            want = hf(torch.tensor([row])).logits[0]
            assert_close(got[b, L - 1:], want[n - 1:],
                         what=f"{model_name} row {b} (prompt {n} of a batch padded to {L})")


@pytest.mark.points(1)
def test_reused_cache_after_reset(kv, rng):
    """A cache reset and reused for a shorter sequence gives that sequence's logits (no stale reads)."""
    model = kv.model.load_model(model_path("tiny-qwen2"))
    hf = hf_model("tiny-qwen2")
    caches = model.allocate_kv_caches(1, 64)
    long = torch.tensor([random_prompt(rng, 60, model.config.vocab_size)])
    short = torch.tensor([random_prompt(rng, 12, model.config.vocab_size)])
    with torch.no_grad():
        decode_with_cache(model, long, 50, caches)
        for c in caches:
            c.reset()
        got = decode_with_cache(model, short, 8, caches)
        want = hf(short).logits
    assert_close(got[:, 7:], want[:, 7:], what="logits after reset()")
