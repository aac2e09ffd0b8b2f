"""KVCacheManager: slot mapping, prefix hits, the cases real engines got wrong, copy-on-write."""
import pytest

BS = 4


def slots_of(table, start, n, bs=BS):
    return [table[i // bs] * bs + i % bs for i in range(start, start + n)]


@pytest.mark.points(2)
def test_slot_mapping_and_growth(bm):
    """slot = block_table[i // block_size] * block_size + i % block_size, for prompt and decode tokens."""
    m = bm.kv_cache_manager.KVCacheManager(16, BS, enable_prefix_caching=False, watermark=0)
    other = m.allocate("x", [9] * 3)  # so that "a" does not start at block 0
    alloc = m.allocate("a", list(range(10)))
    assert alloc.num_computed_tokens == 0
    table = m.get_block_table("a")
    assert len(table) == 3, f"10 tokens in blocks of {BS} need 3 blocks, got {len(table)}"
    assert alloc.slot_mapping == slots_of(table, 0, 10)
    for i in range(10, 17):  # decode across two block boundaries
        s = m.append_slots("a", [i])
        table = m.get_block_table("a")
        assert s == slots_of(table, i, 1), f"decode token {i}: slot {s}, expected {slots_of(table, i, 1)}"
    assert len(m.get_block_table("a")) == 5 and m.num_tokens("a") == 17
    assert other.slot_mapping == slots_of(m.get_block_table("x"), 0, 3)
    m.free("a")
    m.free("x")
    assert m.get_num_free_blocks() == 16
    with pytest.raises(KeyError):
        m.free("a")


@pytest.mark.points(2)
def test_prefix_hit_and_fully_cached_prompt(bm):
    """A second prompt reuses the first's full blocks; a prompt cached whole still computes its last token."""
    m = bm.kv_cache_manager.KVCacheManager(16, BS, watermark=0)
    prompt = list(range(100, 112))  # exactly 3 full blocks
    m.allocate("a", prompt)
    t_a = m.get_block_table("a")
    b = m.allocate("b", prompt[:8] + [1, 2, 3])
    assert b.num_computed_tokens == 8 and m.get_block_table("b")[:2] == t_a[:2], "the 2 shared full blocks are a hit"
    assert b.slot_mapping == slots_of(m.get_block_table("b"), 8, 3)
    c = m.allocate("c", prompt)
    assert c.num_computed_tokens == 8, ("a prompt whose whole length is cached must still compute its last token: "
                                        f"hit at most (12 - 1) // {BS} = 2 blocks, got {c.num_computed_tokens // BS}")
    assert len(c.slot_mapping) == 4 and m.get_block_table("c")[2] != t_a[2], "the recomputed last block is a new block"
    assert [m.pool.blocks[i].ref_cnt for i in t_a] == [3, 3, 1]
    for s in "abc":
        m.free(s)
    assert m.get_num_free_blocks() == 16


@pytest.mark.points(2)
def test_identical_prompts_in_one_step(bm):
    """Two identical prompts admitted back to back: the second shares the first's full blocks, nothing leaks."""
    m = bm.kv_cache_manager.KVCacheManager(12, BS, watermark=0)
    prompt = list(range(50, 60))  # 2 full blocks + 2 tokens
    a, b = m.allocate("a", prompt), m.allocate("b", prompt)
    ta, tb = m.get_block_table("a"), m.get_block_table("b")
    assert b.num_computed_tokens == 8 and tb[:2] == ta[:2] and tb[2] != ta[2]
    assert not set(a.slot_mapping) & set(b.slot_mapping), "two sequences were given the same slot"
    m.free("a")
    m.free("b")
    assert m.get_num_free_blocks() == 12 and all(blk.ref_cnt == 0 for blk in m.pool.blocks)


@pytest.mark.points(2)
def test_preemption_then_readmission_hits_prefix(bm):
    """A preempted sequence (freed) re-admitted with prompt + output so far reuses its cached blocks."""
    m = bm.kv_cache_manager.KVCacheManager(12, BS, watermark=0)
    tokens = list(range(20, 29))
    m.allocate("a", tokens)
    for t in range(29, 35):
        m.append_slots("a", [t])
        tokens.append(t)
    table = m.get_block_table("a")
    m.free("a")  # preempted
    again = m.allocate("a", tokens)  # 15 tokens: 3 full blocks cached
    assert again.num_computed_tokens == 12 and m.get_block_table("a")[:3] == table[:3], \
        "re-admission must hit the blocks cached before preemption"
    assert again.slot_mapping == slots_of(m.get_block_table("a"), 12, 3)


@pytest.mark.points(2)
@pytest.mark.parametrize("prompt_len", [8, 6], ids=["at_block_boundary", "mid_block"])
def test_fork_copy_on_write(bm, prompt_len):
    """After fork, appending into a shared partly-filled block copies it first; at a boundary nothing is copied."""
    m = bm.kv_cache_manager.KVCacheManager(12, BS, watermark=0)
    m.allocate("p", list(range(prompt_len)))
    m.fork("p", "c")
    shared = m.get_block_table("p")
    assert m.get_block_table("c") == shared and all(m.pool.blocks[i].ref_cnt == 2 for i in shared)
    sp = m.append_slots("p", [100])
    sc = m.append_slots("c", [200])
    tp, tc = m.get_block_table("p"), m.get_block_table("c")
    assert sp != sc, "parent and child wrote the same slot"
    copies = m.take_copies()
    if prompt_len % BS == 0:
        assert copies == [] and tp[:-1] == tc[:-1] == shared, "at a block boundary the shared blocks stay shared, no copy"
    else:
        assert tp[:-1] == tc[:-1] == shared[:-1], "full blocks stay shared"
        assert len(copies) == 1 and copies[0][0] == shared[-1], f"one copy of the shared last block, got {copies}"
        writer_block = sp[0] // BS if copies[0][1] == sp[0] // BS else sc[0] // BS
        assert copies[0][1] == writer_block, "the copy's destination is the block the first writer got"
        assert m.pool.blocks[shared[-1]].ref_cnt == 1, "the old block keeps one owner"
    for s in (sp[0], sc[0]):
        assert m.pool.blocks[s // BS].ref_cnt == 1, "a written block must have exactly one owner"
    m.free("p")
    m.free("c")
    assert m.get_num_free_blocks() == 12


@pytest.mark.points(1)
def test_watermark_and_out_of_blocks(bm):
    """allocate() keeps the watermark free and changes nothing when refused; append_slots may use it."""
    m = bm.kv_cache_manager.KVCacheManager(10, BS, enable_prefix_caching=False, watermark=0.2)  # 2 blocks reserve
    assert m.can_allocate(8) and not m.can_allocate(9), (
        f"10 free blocks, watermark 0.2 (2 kept free for running sequences): can_allocate(8) is {m.can_allocate(8)}, "
        f"can_allocate(9) is {m.can_allocate(9)}; expected True, False (a new request may not dig into the watermark)")
    refused = m.allocate("a", list(range(8 * BS + 1)))
    assert refused is None and m.get_num_free_blocks() == 10 and "a" not in m.seqs, (
        "a prompt of 9 blocks with 8 usable: allocate() must return None and change nothing (got "
        f"{'an allocation' if refused is not None else 'None'}, {m.get_num_free_blocks()} free blocks)")
    assert m.allocate("a", list(range(8 * BS))) is not None, "a prompt of exactly the 8 usable blocks must be admitted"
    assert m.append_slots("a", [1] * (2 * BS)) is not None, "running sequences may use the watermark"
    assert m.get_num_free_blocks() == 0, f"all 10 blocks in use: {m.get_num_free_blocks()} free, expected 0"
    assert m.append_slots("a", [1]) is None and m.num_tokens("a") == 10 * BS, \
        "out of blocks, append_slots() must return None and leave the sequence's length unchanged (the scheduler preempts)"
