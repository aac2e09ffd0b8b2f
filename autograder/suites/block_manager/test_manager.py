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
    assert alloc.num_computed_tokens == 0, \
        f"prefix caching is off: num_computed_tokens {alloc.num_computed_tokens}, expected 0 (nothing can be reused)"
    table = m.get_block_table("a")
    assert len(table) == 3, f"10 tokens in blocks of {BS} need 3 blocks, got {len(table)}"
    assert alloc.slot_mapping == slots_of(table, 0, 10), (
        f"prompt slots {alloc.slot_mapping} with block table {table}, expected {slots_of(table, 0, 10)}: "
        f"token i goes to table[i // {BS}] * {BS} + i % {BS}")
    for i in range(10, 17):  # decode across two block boundaries
        s = m.append_slots("a", [i])
        table = m.get_block_table("a")
        assert s == slots_of(table, i, 1), f"decode token {i}: slot {s}, expected {slots_of(table, i, 1)}"
    n_blocks, n_tokens = len(m.get_block_table("a")), m.num_tokens("a")
    assert n_blocks == 5 and n_tokens == 17, \
        f"after 10 prompt + 7 decode tokens: {n_blocks} blocks and num_tokens {n_tokens}, expected 5 and 17"
    assert other.slot_mapping == slots_of(m.get_block_table("x"), 0, 3), (
        f"sequence x's slots {other.slot_mapping}, expected {slots_of(m.get_block_table('x'), 0, 3)} from its "
        f"block table {m.get_block_table('x')}")
    m.free("a")
    m.free("x")
    assert m.get_num_free_blocks() == 16, \
        f"after freeing every sequence {m.get_num_free_blocks()} of 16 blocks are free: blocks leaked"
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
    assert b.slot_mapping == slots_of(m.get_block_table("b"), 8, 3), (
        f"b's slots {b.slot_mapping}, expected {slots_of(m.get_block_table('b'), 8, 3)}: only the 3 tokens after "
        "the 8 cached ones are computed, at their own positions 8-10")
    c = m.allocate("c", prompt)
    assert c.num_computed_tokens == 8, ("a prompt whose whole length is cached must still compute its last token: "
                                        f"hit at most (12 - 1) // {BS} = 2 blocks, got {c.num_computed_tokens // BS}")
    assert len(c.slot_mapping) == 4 and m.get_block_table("c")[2] != t_a[2], "the recomputed last block is a new block"
    refs = [m.pool.blocks[i].ref_cnt for i in t_a]
    assert refs == [3, 3, 1], (f"ref counts of a's blocks {t_a}: {refs}, expected [3, 3, 1] (the 2 first blocks "
                               "shared by a, b and c; the last one a's alone: c recomputes its last block)")
    for s in "abc":
        m.free(s)
    assert m.get_num_free_blocks() == 16, \
        f"after freeing every sequence {m.get_num_free_blocks()} of 16 blocks are free: blocks leaked"


@pytest.mark.points(2)
def test_identical_prompts_in_one_step(bm):
    """Two identical prompts admitted back to back: the second shares the first's full blocks, nothing leaks."""
    m = bm.kv_cache_manager.KVCacheManager(12, BS, watermark=0)
    prompt = list(range(50, 60))  # 2 full blocks + 2 tokens
    a, b = m.allocate("a", prompt), m.allocate("b", prompt)
    ta, tb = m.get_block_table("a"), m.get_block_table("b")
    assert b.num_computed_tokens == 8 and tb[:2] == ta[:2] and tb[2] != ta[2], (
        f"a: {ta}, b: {tb}, b's num_computed_tokens {b.num_computed_tokens}: expected b to hit a's 2 full blocks "
        "(8 tokens; a hashed them as it filled them, in the same step) and get its own partly filled last block")
    assert not set(a.slot_mapping) & set(b.slot_mapping), "two sequences were given the same slot"
    m.free("a")
    m.free("b")
    left = {blk.block_id: blk.ref_cnt for blk in m.pool.blocks if blk.ref_cnt != 0}
    assert m.get_num_free_blocks() == 12 and not left, (
        f"after freeing both: {m.get_num_free_blocks()} of 12 free, blocks still referenced {left}: "
        "expected every block free with ref_cnt 0")


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
    assert again.slot_mapping == slots_of(m.get_block_table("a"), 12, 3), (
        f"re-admitted slots {again.slot_mapping}, expected {slots_of(m.get_block_table('a'), 12, 3)}: "
        "only tokens 12-14 are computed again")


@pytest.mark.points(2)
@pytest.mark.parametrize("prompt_len", [8, 6], ids=["at_block_boundary", "mid_block"])
def test_fork_copy_on_write(bm, prompt_len):
    """After fork, appending into a shared partly-filled block copies it first; at a boundary nothing is copied."""
    m = bm.kv_cache_manager.KVCacheManager(12, BS, watermark=0)
    m.allocate("p", list(range(prompt_len)))
    m.fork("p", "c")
    shared = m.get_block_table("p")
    refs = [m.pool.blocks[i].ref_cnt for i in shared]
    assert m.get_block_table("c") == shared and refs == [2] * len(shared), (
        f"after fork('p', 'c'): c's table {m.get_block_table('c')}, p's {shared}, ref counts {refs}: expected the "
        "child to share every block of the parent, each with ref_cnt 2")
    sp = m.append_slots("p", [100])
    sc = m.append_slots("c", [200])
    tp, tc = m.get_block_table("p"), m.get_block_table("c")
    assert sp != sc, "parent and child wrote the same slot"
    copies = m.take_copies()
    if prompt_len % BS == 0:
        assert copies == [] and tp[:-1] == tc[:-1] == shared, \
            "at a block boundary the shared blocks stay shared, no copy"
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
    assert m.get_num_free_blocks() == 12, \
        f"after freeing parent and child {m.get_num_free_blocks()} of 12 blocks are free: blocks leaked"


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
        "out of blocks, append_slots() must return None and leave the sequence's length unchanged " \
        "(the scheduler preempts)"


def _free_queue_ids(m) -> list[int]:
    from autograder.remote.client import gather

    return gather(m.pool.free_block_queue.get_all_free_blocks(), "block_id")


@pytest.mark.points(1)
def test_free_releases_the_tail_first(bm):
    """free() hands a sequence's blocks back last block first, so the free queue evicts its last
    blocks (the least likely to be shared) before its first ones."""
    m = bm.kv_cache_manager.KVCacheManager(8, BS, enable_prefix_caching=False, watermark=0)
    m.allocate("x", [1] * 3)  # so that "a" does not start at block 0
    m.allocate("a", list(range(3 * BS)))
    table = list(m.get_block_table("a"))
    m.free("a")
    queue = _free_queue_ids(m)
    assert queue[-3:] == table[::-1], (
        f"after free('a') with block table {table}, the free queue ends {queue[-3:]}; expected {table[::-1]} "
        "(the sequence's blocks released tail first: pool.free_blocks(reversed(blocks)))")


@pytest.mark.points(1)
def test_watermark_counts_revived_cached_blocks(bm):
    """A prefix hit on a cached block that is free takes it out of the free queue: allocate() counts
    it with the new blocks against the watermark (and admits the prompt when both fit)."""
    m = bm.kv_cache_manager.KVCacheManager(10, BS, watermark=0.2)  # 8 blocks usable by new requests
    prefix = list(range(100, 100 + 2 * BS))
    m.allocate("a", prefix + [7])
    m.free("a")  # its 2 full blocks stay cached, with ref_cnt 0
    assert m.get_num_free_blocks() == 10, \
        f"after free('a') {m.get_num_free_blocks()} of 10 blocks are free: a cached block is free too"
    over = m.allocate("b", prefix + list(range(7 * BS)))  # 2 cached (free) + 7 new = 9 blocks taken
    assert over is None and "b" not in m.seqs and m.get_num_free_blocks() == 10, (
        "a prompt that hits 2 cached but free blocks and needs 7 new ones takes 9 of the free blocks, 1 more than the "
        "8 the watermark leaves to new requests: allocate() must return None and change nothing (a revived cached "
        "block counts as a new block for can_allocate)")
    fits = m.allocate("b", prefix + list(range(6 * BS)))  # 2 revived + 6 new = 8: admitted, with the hit
    assert fits is not None and fits.num_computed_tokens == 2 * BS, (
        "2 revived + 6 new blocks fit the 8 usable ones: "
        "allocate() must admit the prompt and reuse the 2 cached blocks")


@pytest.mark.points(1)
def test_prefix_caching_off(bm):
    """With caching off no block gets a hash or a cache entry (BlockPool(enable_caching=False),
    KVCacheManager(enable_prefix_caching=False)), and no prompt hits."""
    pool = bm.block_pool.BlockPool(4, enable_caching=False)
    block = pool.get_new_blocks(1)[0]
    pool.cache_full_block(block, 12345)
    assert block.block_hash is None and pool.get_cached_block(12345) is None, (
        "BlockPool(enable_caching=False).cache_full_block must do nothing: the block got hash "
        f"{block.block_hash!r} and the pool {'has' if pool.get_cached_block(12345) is not None else 'has no'} entry")
    m = bm.kv_cache_manager.KVCacheManager(12, BS, enable_prefix_caching=False, watermark=0)
    prompt = list(range(60, 60 + 2 * BS + 1))
    m.allocate("a", prompt)
    from autograder.remote.client import gather

    hashes = gather([m.pool.blocks[i] for i in m.get_block_table("a")], "block_hash")
    assert hashes == [None] * 3, f"caching is off: full blocks must not be hashed, got block_hash {hashes}"
    assert m.get_computed_blocks(prompt) == [], "caching is off: get_computed_blocks() must return []"
    b = m.allocate("b", prompt)
    assert b.num_computed_tokens == 0 and not set(m.get_block_table("b")) & set(m.get_block_table("a")), (
        "caching is off: an identical prompt computes every token in blocks of its own")


@pytest.mark.points(1)
def test_manager_misuse_is_refused(bm):
    """An id in use (allocate, fork), an unknown id, remove() of a block not in the free queue: each
    raises, and the pool is as before; append_slots(seq, []) gives [] and changes nothing."""
    m = bm.kv_cache_manager.KVCacheManager(8, BS, watermark=0)
    m.allocate("a", list(range(6)))
    m.allocate("b", [1])
    before = (m.get_num_free_blocks(), list(m.get_block_table("a")), list(m.get_block_table("b")))

    def same(what):
        now = (m.get_num_free_blocks(), list(m.get_block_table("a")), list(m.get_block_table("b")))
        assert now == before, f"{what} changed the pool or the block tables: {before} -> {now}"

    with pytest.raises(ValueError):
        m.allocate("a", [5, 6])
    same("allocate() of an id in use (expected ValueError)")
    with pytest.raises(ValueError):
        m.fork("a", "b")
    same("fork() to an id in use (expected ValueError)")
    with pytest.raises(KeyError):
        m.fork("nobody", "c")
    with pytest.raises(KeyError):
        m.append_slots("nobody", [1])
    same("fork() / append_slots() of an unknown id (expected KeyError)")
    assert m.append_slots("a", []) == [] and m.num_tokens("a") == 6, \
        "append_slots(seq, []) must return [] and add nothing"
    same("append_slots(seq, [])")
    in_use = m.pool.blocks[m.get_block_table("a")[0]]
    with pytest.raises(ValueError):
        m.pool.free_block_queue.remove(in_use)
    same("FreeKVCacheBlockQueue.remove() of a block not in the queue (expected ValueError)")


@pytest.mark.points(1)
def test_prefix_lookup_stops_at_the_first_miss(bm):
    """get_computed_blocks is a query (no ref count or free count changes) and returns the cached
    blocks that START the prompt: after the first miss nothing counts, even a block still cached."""
    from autograder.remote.client import gather

    m = bm.kv_cache_manager.KVCacheManager(8, BS, watermark=0)
    prompt = list(range(40, 40 + 2 * BS)) + [1]  # 2 full blocks + 1 token
    m.allocate("a", prompt)
    t = list(m.get_block_table("a"))
    refs = lambda: gather(m.pool.blocks, "ref_cnt")  # noqa: E731
    before = (refs(), m.get_num_free_blocks())
    hit = m.get_computed_blocks(prompt)
    assert [b.block_id for b in hit] == t[:2], f"get_computed_blocks: expected blocks {t[:2]}, got {hit}"
    assert (refs(), m.get_num_free_blocks()) == before, (
        "kv_cache_manager.py, get_computed_blocks: it must change no ref count and take no block from the free "
        "queue (allocate() touches the hits once it knows the prompt fits)")
    m.free("a")  # free queue: 3..7, then a's blocks tail first: t[2], t[1], t[0]
    m.pool.touch([m.pool.blocks[t[1]]])
    m.pool.free_blocks([m.pool.blocks[t[1]]])  # move block 1 to the back: ..., t[2], t[0], t[1]
    taken = m.pool.get_new_blocks(m.get_num_free_blocks() - 1)  # evicts everything up to block 0, keeps block 1
    assert m.pool.get_cached_block(hash_chain(bm, prompt)[1]) is not None, "setup: block 1 should still be cached"
    hit = m.get_computed_blocks(prompt)
    assert hit == [], (
        "kv_cache_manager.py, get_computed_blocks: the prompt's block 0 was evicted but its block 1 is still "
        f"cached; the hit must be [] (stop at the first miss: a prefix is a run from the start), got "
        f"{[b.block_id for b in hit]}")
    m.pool.free_blocks(taken)


def hash_chain(bm, tokens):
    return bm.hashing.block_hashes(tokens, BS)


@pytest.mark.points(1)
def test_append_slots_counts_the_copy_on_write_block(bm):
    """append_slots into a shared, partly filled last block needs one free block for the copy even
    when the token fits in that block: with none free it returns None and changes nothing."""
    m = bm.kv_cache_manager.KVCacheManager(6, BS, enable_prefix_caching=False, watermark=0)
    m.allocate("p", list(range(6)))  # blocks: 1 full + 1 with 2 of 4 tokens
    m.fork("p", "c")
    m.allocate("x", list(range(4 * BS)))  # takes the 4 other blocks: none free
    table = list(m.get_block_table("c"))
    try:
        got = m.append_slots("c", [9])
    except Exception as e:  # noqa: BLE001 (the pool's BlockPoolError, raised half way through)
        pytest.fail("kv_cache_manager.py, append_slots: the child's last block is shared and partly filled, so its "
                    f"next token needs a new block for the copy, and none is free: expected None, got {e!r} "
                    "(count the copy-on-write block in the check, before changing anything)")
    assert got is None and m.num_tokens("c") == 6 and m.get_block_table("c") == table and m.take_copies() == [], (
        "kv_cache_manager.py, append_slots: the child's last block is shared and partly filled, so its next "
        "token needs a private copy (a new block), and no block is free: expected None with the sequence "
        f"unchanged, got {got!r}, {m.num_tokens('c')} tokens, table {m.get_block_table('c')} (was {table})")
    m.free("x")
    assert m.append_slots("c", [9]) is not None, "with free blocks again, append_slots must give the slot"
