"""generate(): greedy equal to transformers, ragged batches, EOS, max_tokens, recompute path."""
import pytest
import torch

from llmsys.models import model_path

from autograder.fixtures.kv_cache import assert_same_greedy, hf_greedy, hf_model, random_prompt


@pytest.mark.points(3)
def test_greedy_matches_transformers(kv, rng, model_name):
    """Greedy tokens equal transformers.generate for one prompt (decode positions, cache, sampling)."""
    model = kv.model.load_model(model_path(model_name))
    hf = hf_model(model_name)
    prompt = random_prompt(rng, int(torch.randint(3, 30, (1,), generator=rng)), model.config.vocab_size)
    params = kv.sampling.SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    got = kv.generate.generate(model, [prompt], params)
    assert len(got) == 1, f"generate returned {len(got)} sequences for 1 prompt"
    assert_same_greedy(hf, prompt, got[0], hf_greedy(hf, prompt, 24), f"{model_name} greedy")


@pytest.mark.points(2)
def test_ragged_batch(kv, rng, model_name):
    """Four prompts of different lengths (one of a single token) in one batch: each equals its own run."""
    model = kv.model.load_model(model_path(model_name))
    hf = hf_model(model_name)
    lens = [1] + [int(x) for x in torch.randint(2, 25, (3,), generator=rng)]
    prompts = [random_prompt(rng, n, model.config.vocab_size) for n in lens]
    params = kv.sampling.SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    got = kv.generate.generate(model, prompts, params)
    assert len(got) == len(prompts), f"generate returned {len(got)} sequences for {len(prompts)} prompts"
    for i, (p, g) in enumerate(zip(prompts, got)):
        assert_same_greedy(hf, p, g, hf_greedy(hf, p, 16),
                           f"{model_name} prompt {i} (length {len(p)}) in a ragged batch")


@pytest.mark.points(1)
def test_recompute_path_gives_same_tokens(kv, rng):
    """use_cache=False recomputes everything each step and must give the same greedy tokens."""
    model = kv.model.load_model(model_path("tiny-llama"))
    prompts = [random_prompt(rng, n, model.config.vocab_size) for n in (4, 11)]
    params = kv.sampling.SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    cached = kv.generate.generate(model, prompts, params, use_cache=True)
    recomputed = kv.generate.generate(model, prompts, params, use_cache=False)
    assert cached == recomputed, f"use_cache=False gave {recomputed}, use_cache=True gave {cached}"


@pytest.mark.points(1)
def test_eos_and_max_tokens(kv, rng):
    """A sequence stops right after its EOS (included); the others run to max_tokens; ignore_eos ignores it."""
    model = kv.model.load_model(model_path("tiny-qwen2"))
    prompts = [random_prompt(rng, 7, model.config.vocab_size), random_prompt(rng, 9, model.config.vocab_size)]
    greedy = kv.sampling.SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    free = kv.generate.generate(model, prompts, greedy)
    assert [len(x) for x in free] == [12, 12], \
        f"with ignore_eos every sequence has max_tokens=12 tokens, got {[len(x) for x in free]}"
    eos = free[0][3]  # make the 4th token of sequence 0 its end of sequence
    model.config.eos_token_id = [eos]
    stopped = kv.generate.generate(model, prompts, kv.sampling.SamplingParams(temperature=0.0, max_tokens=12))
    first = free[0].index(eos)
    assert stopped[0] == free[0][:first + 1], f"sequence 0 must stop right after EOS {eos} (kept): got {stopped[0]}"
    want1 = free[1][:free[1].index(eos) + 1] if eos in free[1] else free[1]
    assert stopped[1] == want1, f"sequence 1 must go on while sequence 0 stops: got {stopped[1]}, expected {want1}"
    assert kv.generate.generate(model, prompts, greedy) == free, "ignore_eos=True must ignore the EOS token"
