"""The engine end to end on CPU: greedy outputs equal transformers.generate, under continuous
batching, chunked prefill, preemption, mid-run arrivals and prefix caching; no block leaks."""
import pytest
import torch

from autograder.fixtures.engine import check_against_transformers, check_schedule, path, prompts

GREEDY = dict(temperature=0.0, max_tokens=16, ignore_eos=True)


# What a test leaves out of an engine's configuration (the given LLM's defaults, passed explicitly)
LLM_DEFAULTS = dict(max_num_seqs=64, max_num_batched_tokens=2048)


def make_llm(eng, **config):
    """The engine under test, and the configuration it was given (what its schedule is checked
    against: the test's own numbers, not what the engine says about itself)."""
    config = {**LLM_DEFAULTS, **config}
    return eng.llm.LLM(path(), **config), config


def schedule(llm, config, outs, ps, what, skip_steps=0):
    """The engine's schedule, checked on this side against the requests and their outputs (which
    the caller checked against transformers first): fixtures/engine.py, check_schedule."""
    return check_schedule(llm.engine.schedule_log,
                          {o.request_id: (p, list(o.outputs[0].token_ids)) for o, p in zip(outs, ps)},
                          block_size=config["block_size"], num_blocks=config["num_kv_blocks"],
                          max_num_seqs=config["max_num_seqs"], max_num_batched_tokens=config["max_num_batched_tokens"],
                          what=what, skip_steps=skip_steps)


def leak_check(llm):
    kv = llm.engine.scheduler.kv
    assert kv.get_num_free_blocks() == kv.pool.num_blocks, \
        f"{kv.pool.num_blocks - kv.get_num_free_blocks()} KV blocks still held after every request finished " \
        "(not freed?)"


@pytest.mark.points(3)
def test_batch_of_ragged_prompts(eng, rng):
    """Five prompts of different lengths (one of 1 token) in one generate(): each equals transformers."""
    llm, config = make_llm(eng, max_model_len=96, num_kv_blocks=64, block_size=8)
    ps = prompts(rng, [1, 9, 24, 37, 16])
    outs = llm.generate(ps, eng.llm.SamplingParams(**GREEDY))
    check_against_transformers(outs, ps, 16, "continuous batching")
    assert schedule(llm, config, outs, ps, "continuous batching").max_scheduled > 1, \
        "five requests and room for all: no step ran two or more sequences together (continuous batching)"
    unfinished = [(o.request_id, o.finished, o.outputs[0].finish_reason) for o in outs
                  if not (o.finished and o.outputs[0].finish_reason == "length")]
    assert not unfinished, (f"requests (id, finished, finish_reason) {unfinished}: every request ran to max_tokens "
                            "with ignore_eos, so each must be finished with finish_reason 'length'")
    leak_check(llm)


@pytest.mark.points(3)
def test_preemption_by_recompute(eng, rng):
    """A cache too small for all requests: sequences are preempted (counted) and still give the same tokens."""
    llm, config = make_llm(eng, max_model_len=64, num_kv_blocks=17, block_size=4, max_num_batched_tokens=64)
    ps = prompts(rng, [30, 12, 25, 40, 7])
    outs = llm.generate(ps, eng.llm.SamplingParams(**GREEDY))
    check_against_transformers(outs, ps, 16, "with preemption")
    assert schedule(llm, config, outs, ps, "with preemption").preemptions > 0, \
        "17 blocks of 4 cannot hold these requests at once: preemption must happen (no step's schedule() preempted)"
    leak_check(llm)


@pytest.mark.points(2)
def test_chunked_prefill(eng, rng):
    """A token budget of 8 per step splits long prompts into chunks; no step exceeds the budget."""
    llm, config = make_llm(eng, max_model_len=80, num_kv_blocks=64, block_size=8, max_num_batched_tokens=8)
    # random prompts, and a fixed pair on which chunk positions that restart at 0 change the greedy
    # tokens by a wide margin (a logit gap of 0.67): the random draw alone missed that bug 2 times in 60
    ps = prompts(rng, [45, 3, 21]) + prompts(torch.Generator().manual_seed(21), [45, 37])
    outs = llm.generate(ps, eng.llm.SamplingParams(**GREEDY))
    check_against_transformers(outs, ps, 16, "chunked prefill")
    schedule(llm, config, outs, ps, "chunked prefill")  # among its checks: no step over the budget of 8 tokens
    leak_check(llm)


@pytest.mark.points(2)
def test_requests_arriving_mid_run(eng, rng):
    """Requests added while others are decoding join the running batch and give the same tokens."""
    llm, config = make_llm(eng, max_model_len=80, num_kv_blocks=64, block_size=8, max_num_seqs=4)
    e = llm.engine
    ps = prompts(rng, [10, 33, 5, 18, 27, 2])
    params = eng.llm.SamplingParams(**GREEDY)
    ids = [e.add_request(p, params) for p in ps[:2]]
    for step in range(40):
        if step in (3, 7, 8, 12):
            ids.append(e.add_request(ps[len(ids)], params))
        e.step()
    while e.has_unfinished():
        e.step()
    outs = [e.output(r) for r in ids]
    check_against_transformers(outs, ps, 16, "mid-run arrivals")
    assert schedule(llm, config, outs, ps, "mid-run arrivals").max_scheduled > 1, "no step ran two sequences together"
    leak_check(llm)


@pytest.mark.points(2)
def test_prefix_caching_saves_work(eng, rng):
    """A second request sharing a 32-token prefix computes fewer tokens and gives the same output."""
    llm, config = make_llm(eng, max_model_len=96, num_kv_blocks=64, block_size=8)
    shared = prompts(rng, [32])[0]
    a, b = shared + prompts(rng, [5])[0], shared + prompts(rng, [9])[0]
    params = eng.llm.SamplingParams(**GREEDY)
    first = llm.generate([a], params)
    steps_before = len(llm.engine.schedule_log)
    second = llm.generate([b], params)
    check_against_transformers(first + second, [a, b], 16, "prefix caching")
    sched = schedule(llm, config, second, [b], "prefix caching", skip_steps=steps_before)
    computed = sched.computed[second[0].request_id]
    assert computed <= len(b) - 32 + 16, \
        f"the second request computed {computed} tokens: the 32 cached prefix tokens were recomputed"
    leak_check(llm)


@pytest.mark.points(1)
def test_eos_streaming_and_seeds(eng, rng):
    """EOS stops a request (finish_reason 'stop'); stream() yields the same tokens; a seed reproduces
    sampled output whatever else is in the batch."""
    llm, _ = make_llm(eng, max_model_len=64, num_kv_blocks=64, block_size=8)
    ps = prompts(rng, [6, 11])
    free = llm.generate(ps, eng.llm.SamplingParams(**GREEDY))
    eos = free[0].outputs[0].token_ids[4]
    llm.model.config.eos_token_id = [eos]
    stopped = llm.generate(ps[:1], eng.llm.SamplingParams(temperature=0.0, max_tokens=16))[0].outputs[0]
    first = free[0].outputs[0].token_ids.index(eos)
    want = free[0].outputs[0].token_ids[:first + 1]
    assert list(stopped.token_ids) == want and stopped.finish_reason == "stop", (
        f"with token {eos} as EOS, generation got {list(stopped.token_ids)} (finish_reason {stopped.finish_reason!r}); "
        f"expected the unstopped run's tokens up to and including the first EOS, {want}, and finish_reason 'stop'")
    streamed = {0: [], 1: []}
    for i, tok in llm.stream(ps, eng.llm.SamplingParams(**GREEDY)):
        streamed[i].append(tok)
    assert [streamed[0], streamed[1]] == [list(o.outputs[0].token_ids) for o in free], \
        "stream() must yield generate()'s tokens"
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    sp = eng.llm.SamplingParams(temperature=1.0, max_tokens=12, seed=seed, ignore_eos=True)
    alone = llm.generate(ps[:1], sp)[0].outputs[0].token_ids
    crowded = llm.generate(ps[:1] + prompts(rng, [9, 30]), [sp, eng.llm.SamplingParams(temperature=1.0, max_tokens=5),
                                                            eng.llm.SamplingParams(temperature=1.0, max_tokens=20)])
    assert list(crowded[0].outputs[0].token_ids) == list(alone), \
        "a seeded request must not depend on its batch companions"


@pytest.mark.points(2)
def test_kernel_path_on_cpu(eng, rng):
    """The engine's GPU path, run on the CPU in Triton's interpreter: the cache written by
    reshape_and_cache, steps of decodes only through paged_attention, steps mixing decodes with
    prompt chunks through the given unified_attention: the greedy tokens equal transformers'."""
    from autograder.impl import load

    llm, config = make_llm(eng, max_model_len=64, num_kv_blocks=64, block_size=8, max_num_batched_tokens=16,
                           max_num_seqs=4)
    llm.engine.runner.kernels = load("paged_attention", "kernels")  # what the engine does on a GPU
    ps = prompts(rng, [5, 30, 3, 17, 9])
    outs = llm.generate(ps, eng.llm.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    check_against_transformers(outs, ps, 6, "through the paged-attention kernels (engine.model_runner: "
                               "prepare_inputs's decode_only, block_tables, seq_lens, max_seq_len; the kernels of "
                               "paged_attention)")
    sched = schedule(llm, config, outs, ps, "the kernel path")
    assert sched.decode_only_steps and sched.mixed_steps, (
        "the workload must run steps of decodes only and steps that mix decodes with prompt chunks: the "
        f"schedule had {sched.decode_only_steps} and {sched.mixed_steps}")
    leak_check(llm)
