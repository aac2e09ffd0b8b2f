"""BlockPool: allocation order, ref counts, free order, caching, eviction, misuse errors."""
import pytest


def free_ids(pool):
    return [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]


@pytest.mark.points(2)
def test_allocate_free_and_ref_counts(bm):
    """Blocks come from the front with ref_cnt 1; freed blocks go to the back in the given order."""
    pool = bm.block_pool.BlockPool(8)
    a = pool.get_new_blocks(3)
    got = [(b.block_id, b.ref_cnt) for b in a]
    assert got == [(0, 1), (1, 1), (2, 1)], \
        f"get_new_blocks(3) on a fresh pool: (block_id, ref_cnt) {got}, " \
        "expected the front of the free queue (0, 1, 2), each with ref_cnt 1"
    assert pool.get_num_free_blocks() == 5, \
        f"8 blocks, 3 taken: get_num_free_blocks() gave {pool.get_num_free_blocks()}, expected 5"
    pool.touch([a[1]])
    assert a[1].ref_cnt == 2, "touch() adds a reference"
    pool.free_blocks([a[2], a[1], a[0]])
    assert [b.ref_cnt for b in a] == [0, 1, 0] and free_ids(pool) == [3, 4, 5, 6, 7, 2, 0], \
        "a block goes back to the free queue (at the back, in the order freed) only when its last reference is dropped"
    pool.free_blocks([a[1]])
    assert free_ids(pool) == [3, 4, 5, 6, 7, 2, 0, 1] and pool.get_num_free_blocks() == 8, \
        f"block 1's last reference dropped: free queue {free_ids(pool)}, " \
        "expected it appended at the back: [3, 4, 5, 6, 7, 2, 0, 1]"


@pytest.mark.points(2)
def test_misuse_raises_and_changes_nothing(bm):
    """Double free, a block of another pool, more blocks than are free: BlockPoolError, state unchanged."""
    Err = bm.block_pool.BlockPoolError
    pool, other = bm.block_pool.BlockPool(4), bm.block_pool.BlockPool(4)
    a = pool.get_new_blocks(2)
    with pytest.raises(Err):
        pool.get_new_blocks(3)
    assert pool.get_num_free_blocks() == 2, "a failed allocation must not take blocks"
    pool.free_blocks([a[0]])
    with pytest.raises(Err):
        pool.free_blocks([a[0]])
    with pytest.raises(Err):
        pool.free_blocks([a[1], a[1]])
    assert a[1].ref_cnt == 1 and pool.get_num_free_blocks() == 3, "a rejected free must change nothing"
    with pytest.raises(Err):
        pool.free_blocks([other.get_new_blocks(1)[0]])
    with pytest.raises(Err):
        pool.free_blocks([bm.block.KVCacheBlock(1, ref_cnt=1)])  # same id, not this pool's object
    assert pool.get_num_free_blocks() == 3, \
        f"after rejected frees the pool must be unchanged: {pool.get_num_free_blocks()} free blocks, expected 3"


@pytest.mark.points(2)
def test_cached_blocks_revive_and_evict_lru(bm):
    """A freed full block stays cached; touch() revives it; allocation evicts from the front."""
    pool = bm.block_pool.BlockPool(4)
    a, b = pool.get_new_blocks(2)
    pool.cache_full_block(a, 111)
    pool.cache_full_block(b, 222)
    pool.free_blocks([b, a])  # queue: 2, 3, b(1), a(0)
    assert pool.get_cached_block(111) is a and pool.get_cached_block(222) is b, "freed blocks stay cached"
    pool.touch([a])
    assert (a.ref_cnt == 1 and pool.get_num_free_blocks() == 3
            and a not in pool.free_block_queue.get_all_free_blocks()), \
        "touch() on a cached free block takes it out of the free queue"
    new = pool.get_new_blocks(3)  # 2, 3, then b: evicted
    assert [x.block_id for x in new] == [2, 3, 1], (
        f"get_new_blocks(3) gave blocks {[x.block_id for x in new]}; the free queue was 2, 3, 1 "
        "(block 0 was revived by touch and left the queue): allocation takes from the front, "
        "evicting cached blocks in that order")
    assert pool.get_cached_block(222) is None and b.block_hash is None, "an evicted block leaves the cache"
    assert pool.get_cached_block(111) is a, "evicting block 1 (hash 222) must leave block 0's hash 111 cached"
    dup = new[0]
    pool.cache_full_block(dup, 111)  # identical block computed twice: the first stays in the map
    assert pool.get_cached_block(111) is a, (
        f"a second block cached with an existing hash replaced the first: get_cached_block(111) is block "
        f"{getattr(pool.get_cached_block(111), 'block_id', None)}, "
        "expected block 0 (the map keeps the block cached first)")
    pool.free_blocks([dup])
    pool.get_new_blocks(1)
    assert pool.get_cached_block(111) is a, "evicting a duplicate must not drop the original's entry"


@pytest.mark.points(1)
def test_duplicate_cached_block_keeps_its_hash(bm):
    """cache_full_block with a hash already in the map keeps the map's entry but still gives the
    block its hash: the next block's hash chains from it, so a later prompt can hit past it."""
    pool = bm.block_pool.BlockPool(4)
    first, dup = pool.get_new_blocks(2)
    pool.cache_full_block(first, 111)
    pool.cache_full_block(dup, 111)
    assert pool.get_cached_block(111) is first and dup.block_hash == 111, (
        "block_pool.py, BlockPool.cache_full_block: a second block cached under an existing hash must keep the "
        f"first block in the map and still get block_hash 111 itself (got block_hash {dup.block_hash!r}): "
        "the pool knows the block is full, and the next block's hash chains from it")
    # the consequence in the manager: two identical prompts admitted back to back; the second recomputes its
    # last full block (the (len - 1) // block_size cap), a duplicate; then it fills one more block
    bs = 4
    m = bm.kv_cache_manager.KVCacheManager(12, bs, watermark=0)
    prompt = list(range(30, 30 + 2 * bs))
    m.allocate("a", prompt)
    m.allocate("b", prompt)  # hits block 0 only; its block 1 duplicates a's
    m.append_slots("b", list(range(70, 70 + bs)))  # fills b's block 2, hashed from its block 1's hash
    longer = prompt + list(range(70, 70 + bs)) + [1]
    hit = m.get_computed_blocks(longer)
    assert len(hit) == 3, (
        "block_pool.py, BlockPool.cache_full_block: sequence b recomputed a block already cached (a duplicate), "
        f"then filled the next one; a prompt of b's 12 tokens + 1 must hit all 3 blocks, got {len(hit)}: the "
        "duplicate kept no hash, so the block after it was hashed without its parent")
