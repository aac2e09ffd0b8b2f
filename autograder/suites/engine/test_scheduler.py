"""Scheduler unit tests with the reference-free rules of vLLM's scheduler."""
import pytest

from autograder.impl import load


def make(eng, num_blocks=32, block_size=4, max_num_seqs=8, budget=64, caching=True):
    kv = load("block_manager", "kv_cache_manager").KVCacheManager(num_blocks, block_size, watermark=0,
                                                                  enable_prefix_caching=caching)
    return eng.scheduler.Scheduler(kv, max_num_seqs, budget), kv


def seq(eng, sid, n, arrival=0):
    params = load("kv_cache", "sampling").SamplingParams(max_tokens=100)
    return eng.sequence.Sequence(sid, list(range(100 + 7 * arrival, 100 + 7 * arrival + n)), params, arrival=arrival)


def run_step(plan):
    """What the engine does after the model ran: count computed tokens, 'sample' a token when done."""
    for p in plan:
        p.seq.num_computed_tokens += p.num_tokens
        if p.seq.num_uncomputed == 0:
            p.seq.output_token_ids = [*p.seq.output_token_ids, 1]  # assigned: a list comes back as a copy


@pytest.mark.points(1)
@pytest.mark.parametrize("caching", [True, False], ids=["prefix_caching", "no_prefix_caching"])
def test_budget_seats_and_fcfs(eng, caching):
    """Admission is first come first served, within the token budget and max_num_seqs; slots match the block tables."""
    s, kv = make(eng, max_num_seqs=2, budget=20, caching=caching)
    seqs = [seq(eng, f"s{i}", n, i) for i, n in enumerate([8, 15, 3])]
    for x in seqs:
        s.add(x)
    plan = s.schedule()
    assert [(p.seq.seq_id, p.num_tokens) for p in plan] == [("s0", 8), ("s1", 12)], \
        "step 1: s0's 8 tokens, then the first 12 of s1's 15 (budget 20), s2 waits"
    for p in plan:
        table, c = kv.get_block_table(p.seq.seq_id), p.seq.num_computed_tokens
        want = [table[i // 4] * 4 + i % 4 for i in range(c, c + p.num_tokens)]
        assert p.slot_mapping == want, f"{p.seq.seq_id}: slots {p.slot_mapping}, block table says {want}"
    run_step(plan)
    plan = s.schedule()
    assert [(p.seq.seq_id, p.num_tokens) for p in plan] == [("s0", 1), ("s1", 3)], \
        "step 2: s0 decodes 1 token, s1 finishes its prompt; s2 still has no seat (max_num_seqs=2)"
    assert [x.seq_id for x in s.waiting] == ["s2"], \
        f"step 2: waiting is {[x.seq_id for x in s.waiting]}; s2 must still wait (max_num_seqs=2 are running)"


@pytest.mark.points(1)
@pytest.mark.parametrize("caching", [True, False], ids=["prefix_caching", "no_prefix_caching"])
def test_preemption_takes_the_newest_and_requeues_it_first(eng, caching):
    """Out of blocks: the newest running sequence is preempted, freed, and put at the front of the queue."""
    s, kv = make(eng, num_blocks=6, block_size=4, budget=64, caching=caching)
    a, b, c = seq(eng, "a", 8, 0), seq(eng, "b", 8, 1), seq(eng, "late", 3, 2)
    for x in (a, b):
        s.add(x)
    run_step(s.schedule())   # a and b: 2 blocks each, 2 free
    s.add(c)
    run_step(s.schedule())   # decode a, b (new blocks each: 0 free); c cannot be admitted
    running, free = [x.seq_id for x in s.running], kv.get_num_free_blocks()
    assert running == ["a", "b"] and free == 0, (
        f"running {running} with {free} free blocks; expected ['a', 'b'] and 0: decoding a and b took the last two "
        "free blocks, so c cannot be admitted")
    plan = s.schedule()      # a and b need no new block (each has 3 free slots) ...
    run_step(plan)
    for _ in range(3):
        run_step(s.schedule())
    # ... until a needs a 4th block: b (newest) is preempted
    assert s.num_preemptions >= 1 and b.num_computed_tokens == 0 and b.seq_id not in kv.seqs, (
        f"num_preemptions {s.num_preemptions}, b.num_computed_tokens {b.num_computed_tokens}, b holds blocks: "
        f"{b.seq_id in kv.seqs}; when a needs a block and none is free, the newest running request (b) is preempted "
        "by recompute: its blocks freed and its computed tokens reset to 0")
    assert s.waiting[0] is b, "the preempted sequence goes to the FRONT of the waiting queue"
    assert b.output_token_ids, "a preempted sequence keeps the tokens it generated"
