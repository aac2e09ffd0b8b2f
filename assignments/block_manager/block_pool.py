"""The pool of physical blocks (vLLM v1: vllm/v1/core/block_pool.py).

Owns every KVCacheBlock, the free queue, and the prefix cache (block hash -> block). A block
is in exactly one of three states:
    in use      ref_cnt > 0, not in the free queue
    cached      ref_cnt == 0, in the free queue, block_hash set and in the cache map
    free        ref_cnt == 0, in the free queue, no hash
Allocation takes from the front of the free queue; if that block is cached, it is evicted
(its hash leaves the map) first. So cached blocks are evicted least-recently-freed first.
"""
from __future__ import annotations

from .block import FreeKVCacheBlockQueue, KVCacheBlock


class BlockPoolError(RuntimeError):
    """Misuse of the pool: double free, a foreign block, more blocks than exist."""


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True):
        """num_blocks blocks with ids 0..num_blocks-1, all free. Given."""
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached_block_hash_to_block: dict[int, KVCacheBlock] = {}

    def get_num_free_blocks(self) -> int:
        """Blocks that can be handed out now (free or cached)."""
        return len(self.free_block_queue)

    def _own(self, block: KVCacheBlock) -> None:
        if not (0 <= block.block_id < self.num_blocks) or self.blocks[block.block_id] is not block:
            raise BlockPoolError(f"{block} does not belong to this pool")

    def get_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        """Take `num_blocks` blocks from the front of the free queue, each with ref_cnt 1.

        A cached block taken this way is evicted: drop it from cached_block_hash_to_block and
        clear its block_hash. Raises BlockPoolError (changing nothing) if fewer are free.
        """
        raise NotImplementedError(
            "block_manager: BlockPool.get_new_blocks (block_manager/block_pool.py): check the count first; popleft "
            "each, evict its hash, set ref_cnt = 1")

    def _evict(self, block: KVCacheBlock) -> None:
        """A helper of get_new_blocks: a reused block leaves the cache (its map entry, if the map
        points at it, and its hash). Not called by the tests: write it if you use it."""
        raise NotImplementedError(
            "block_manager: BlockPool._evict (block_manager/block_pool.py): if the block has a hash and the map points "
            "at it, delete the entry; clear the hash")

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """A sequence starts using these (prefix-hit) blocks: ref_cnt += 1; a block at ref_cnt 0
        is revived, i.e. removed from the free queue (it keeps its hash)."""
        raise NotImplementedError(
            "block_manager: BlockPool.touch (block_manager/block_pool.py): remove from the free queue when ref_cnt was "
            "0, then count up")

    def free_blocks(self, ordered_blocks: list[KVCacheBlock]) -> None:
        """Drop one reference to each block, in the given order; a block reaching 0 goes to the
        back of the free queue, keeping its hash (it stays cached until evicted).

        Raises BlockPoolError for a block with ref_cnt 0 (freed twice) or from another pool.
        Callers pass a sequence's blocks tail first, so its last blocks, the least likely to be
        shared, are evicted before its first ones.
        """
        raise NotImplementedError(
            "block_manager: BlockPool.free_blocks (block_manager/block_pool.py): validate every block before changing "
            "any; ref_cnt -= 1; at 0 append to the free queue")

    def cache_full_block(self, block: KVCacheBlock, block_hash: int) -> None:
        """Record that `block` (full, in use) holds the tokens hashed to `block_hash`.

        If another block is already cached under this hash (two identical prompts admitted in
        the same step), keep the existing entry; `block` still gets its hash, so the pool
        knows it is full, but no map entry. No-op when caching is disabled.
        """
        raise NotImplementedError(
            "block_manager: BlockPool.cache_full_block (block_manager/block_pool.py): set block.block_hash; add to the "
            "map only if the hash is not there yet")

    def get_cached_block(self, block_hash: int) -> KVCacheBlock | None:
        """The block cached under this hash, or None. Does not change ref counts."""
        raise NotImplementedError(
            "block_manager: BlockPool.get_cached_block (block_manager/block_pool.py): a dictionary lookup")
