"""Sampling: top-k / top-p sets, frequencies, temperature 0, seeds."""
import pytest
import torch

from llmsys.models import model_path

from autograder.fixtures.kv_cache import random_prompt


def kept(kv, logits, k, p):
    out = kv.sampling.apply_top_k_top_p(logits, k, p)
    assert out.shape == logits.shape, f"apply_top_k_top_p returned shape {list(out.shape)}"
    return torch.isfinite(out)


@pytest.mark.points(2)
def test_top_k_top_p_sets(kv, rng):
    """Exactly the right tokens survive: top-k, then the smallest top-p nucleus, in shuffled vocab order."""
    probs = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02])
    perm = torch.randperm(7, generator=rng)
    logits = probs.log()[perm][None].repeat(2, 1)
    original = logits.clone()

    def want(n):  # vocab entry j holds probs[perm[j]], the (perm[j])-th most likely token
        return (perm < n)[None].repeat(2, 1)

    # no case sits on a boundary where fp32 rounding of the cumulative sum could decide
    cases = [(0, 1.0, 7), (3, 1.0, 3), (0, 0.5, 2), (0, 0.64, 2), (0, 0.66, 3), (0, 0.39, 1), (0, 0.1, 1),
             (2, 0.9, 2), (5, 0.75, 3), (-1, 0.85, 4)]
    for k, p, n in cases:
        got = kept(kv, logits, k, p)
        assert torch.equal(got, want(n)), \
            f"top_k={k}, top_p={p} on probs {probs.tolist()}: expected the {n} most likely tokens kept"
    # top-p measures the mass of what top-k kept (renormalised), not of the whole vocabulary: here
    # the top 3 renormalise to [0.49, 0.33, 0.18] (top-p 0.7 keeps 2); over the whole vocabulary
    # the first two hold only 0.5, and a third token would be kept
    probs2 = torch.tensor([0.30, 0.20, 0.11, 0.10, 0.09, 0.08, 0.07, 0.05])
    got = kept(kv, probs2.log()[None], 3, 0.7)
    assert got[0].tolist() == [True, True] + [False] * 6, (
        f"top_k=3, top_p=0.7 on probs {probs2.tolist()}: expected the 2 most likely kept (top-p over the softmax of "
        f"what top-k kept), got {got[0].nonzero().flatten().tolist()}")
    assert torch.equal(logits, original), "apply_top_k_top_p must not modify its input"
    out = kv.sampling.apply_top_k_top_p(logits.clone(), 3, 1.0)
    assert torch.equal(out[torch.isfinite(out)], logits[torch.isfinite(out)]), "kept logits must keep their values"


@pytest.mark.points(2)
def test_sampling_frequencies(kv, rng):
    """20,000 draws follow the renormalised distribution after temperature, top-k and top-p."""
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    logits = torch.randn(1, 12, generator=rng) * 1.5
    params = kv.sampling.SamplingParams(temperature=0.7, top_k=6, top_p=0.8, seed=seed)
    n = 20000
    gen = torch.Generator().manual_seed(seed)
    toks = kv.sampling.sample(logits.repeat(n, 1), params, gen)
    assert toks.shape == (n,) and toks.dtype == torch.int64, \
        f"sample returned {toks.dtype} {list(toks.shape)}, expected int64 [{n}]"
    # reference distribution, computed independently in float64
    p = torch.softmax(logits[0].double() / 0.7, 0)
    order = p.argsort(descending=True)
    keep = torch.zeros(12, dtype=torch.bool)
    total, top = 0.0, p[order[:6]] / p[order[:6]].sum()
    for i, j in enumerate(order[:6]):
        keep[j] = True
        total += float(top[i])
        if total >= 0.8:
            break
    want = torch.where(keep, p, torch.zeros_like(p))
    want /= want.sum()
    freq = torch.bincount(toks, minlength=12).double() / n
    outside = ((freq > 0) & ~keep).nonzero().flatten().tolist()
    assert not outside, (f"tokens outside the top-k/top-p set were sampled: {outside} (the set is "
                         f"{keep.nonzero().flatten().tolist()})")
    dev = (freq - want).abs().max()
    assert dev < 0.02, f"sampled frequencies {freq.tolist()} differ from the distribution {want.tolist()} by {dev:.3f}"
    # the temperature comes before top-p: at temperature 2, probs [0.5, 0.3, 0.2] become [0.42, 0.32, 0.26]
    # and top-p 0.45 keeps 2 tokens; filtered at temperature 1, only the first would be kept
    flat = torch.tensor([[0.5, 0.3, 0.2]]).log()
    toks2 = kv.sampling.sample(flat.repeat(4000, 1), kv.sampling.SamplingParams(temperature=2.0, top_p=0.45, seed=seed),
                               torch.Generator().manual_seed(seed + 1))
    counts = torch.bincount(toks2, minlength=3).tolist()
    share = counts[1] / 4000  # expected 0.322 / 0.737 = 0.437; 4000 draws: standard deviation 0.008
    assert counts[2] == 0 and abs(share - 0.437) < 0.05, (
        f"temperature 2, top_p 0.45 on probs [0.5, 0.3, 0.2]: drew tokens {counts}; expected tokens 0 and 1 about "
        "56% / 44% and never 2 (divide by the temperature first, then apply top-k and top-p)")
    greedy = kv.sampling.sample(logits.repeat(3, 1), kv.sampling.SamplingParams(temperature=0.0), None)
    assert greedy.tolist() == [int(logits.argmax())] * 3, "temperature 0 must take the argmax"


@pytest.mark.points(1)
def test_seed_reproduces(kv, rng):
    """The same seed gives the same tokens, another seed other tokens (temperature 1, batch of 2)."""
    model = kv.model.load_model(model_path("tiny-qwen2"))
    prompts = [random_prompt(rng, 5, model.config.vocab_size), random_prompt(rng, 8, model.config.vocab_size)]
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    run = lambda s: kv.generate.generate(  # noqa: E731
        model, prompts, kv.sampling.SamplingParams(temperature=1.0, max_tokens=16, seed=s, ignore_eos=True))
    a, b, c = run(seed), run(seed), run(seed + 1)
    assert a == b, "the same seed must give the same tokens"
    assert a != c, "different seeds gave identical samples: is the seed used for every draw?"


@pytest.mark.points(1)
def test_one_generator_for_the_whole_generation(kv, rng):
    """With a seed, generate() makes ONE generator and every step draws from it: at a temperature
    so high that every token is about equally likely, 24 steps give many different tokens. A
    generator made (and seeded) again at every step draws the same number at every step, so the
    same few tokens come out again and again."""
    model = kv.model.load_model(model_path("tiny-qwen2"))
    prompt = random_prompt(rng, 6, model.config.vocab_size)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    out = kv.generate.generate(model, [prompt], kv.sampling.SamplingParams(temperature=1e4, max_tokens=24, seed=seed,
                                                                            ignore_eos=True))[0]
    distinct = len(set(out))
    # one generator: 24 draws over ~512 nearly equally likely tokens, about 23.5 distinct; 12 or fewer has
    # probability below 1e-20. Re-seeded every step: the same uniform draw each time, 1 to 3 distinct.
    assert distinct > 12, (f"24 steps at temperature 1e4 (seed {seed}) gave only {distinct} different tokens: {out}. "
                           "Make one torch.Generator per generate() call, seeded once, and pass it to every sample()")


@pytest.mark.points(1)
def test_sample_works_in_float32(kv, rng):
    """bf16 logits are sampled in float32: over 1000 equally likely tokens, top_p = 0.7003 keeps
    exactly 701 (700 hold 0.7 before the 701st). Summed in bf16, the cumulative probabilities lose
    mass (steps of 0.001 round away at 0.5 and above) and fewer tokens are kept."""
    n, vocab = 20000, 1000
    logits = torch.zeros(n, vocab, dtype=torch.bfloat16)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    toks = kv.sampling.sample(logits, kv.sampling.SamplingParams(temperature=1.0, top_p=0.7003),
                              torch.Generator().manual_seed(seed))
    assert toks.dtype == torch.int64 and toks.shape == (n,), f"sample returned {toks.dtype} {list(toks.shape)}"
    distinct = len(set(toks.tolist()))
    # 20,000 draws over 701 equally likely tokens miss one with probability below 1e-9
    assert distinct == 701, (
        f"sampling.py, sample: bf16 logits of 1000 equal tokens, top_p 0.7003 (seed {seed}): {distinct} different "
        "tokens were drawn, expected exactly 701 (the smallest set whose probability reaches 0.7003); convert the "
        "logits to float32 first, as the docstring says: in bf16 the cumulative sum rounds")
