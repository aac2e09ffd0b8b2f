"""Physical KV-cache blocks and the queue of free ones (vLLM v1: vllm/v1/core/kv_cache_utils.py).

A block holds the K and V of `block_size` consecutive tokens of one sequence, in every layer.
The allocator never touches tensors: it hands out block ids, and the kernels of assignment 3
read and write KV at slot = block_id * block_size + offset.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class KVCacheBlock:
    """One physical block. Given.

    ref_cnt:    how many sequences use it now (0: it is free, maybe still cached).
    block_hash: the hash of the full block's tokens chained to its prefix, or None while the
                block is not full (or caching is off). A free block that keeps its hash is a
                *cached* block: a later prompt with the same prefix revives it.
    prev_free_block / next_free_block: links of the free queue (None when not in it).
    """

    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None
    prev_free_block: "KVCacheBlock | None" = None
    next_free_block: "KVCacheBlock | None" = None

    def __repr__(self) -> str:
        return (f"KVCacheBlock(id={self.block_id}, ref={self.ref_cnt}, "
                f"hash={'-' if self.block_hash is None else hex(self.block_hash)[:8]})")


class FreeKVCacheBlockQueue:
    """The free blocks, in eviction order (least recently freed first), as a doubly linked list.

    Every operation is O(1): popleft() takes the block to reuse next, append() puts a freed
    block at the back, and remove() takes a block out of the middle (a cached block revived
    by a prefix hit). The links live in the blocks themselves (prev_free_block,
    next_free_block), as in vLLM; a block not in the queue has both links None.

    Attributes you keep, which the given methods (__len__, get_all_free_blocks) and the tests
    read: `head` and `tail` (the first and last block, None when empty) and `num_free_blocks`.
    Only this class changes them and the blocks' two links.
    """

    def __init__(self, blocks: list[KVCacheBlock]):
        # BEGIN SOLUTION hint: link the blocks in order through prev_free_block / next_free_block;
        #   keep head, tail and a count
        self.num_free_blocks = len(blocks)
        self.head: KVCacheBlock | None = blocks[0] if blocks else None
        self.tail: KVCacheBlock | None = blocks[-1] if blocks else None
        for i, b in enumerate(blocks):
            b.prev_free_block = blocks[i - 1] if i > 0 else None
            b.next_free_block = blocks[i + 1] if i + 1 < len(blocks) else None
        # END SOLUTION

    def __len__(self) -> int:
        return self.num_free_blocks

    def popleft(self) -> KVCacheBlock:
        """Remove and return the first (least recently freed) block. ValueError if empty."""
        # BEGIN SOLUTION hint: unlink the head; clear its links
        if self.head is None:
            raise ValueError("no free blocks")
        block = self.head
        self.remove(block)
        return block
        # END SOLUTION

    def remove(self, block: KVCacheBlock) -> None:
        """Take `block` out of the queue wherever it is, in O(1)."""
        # BEGIN SOLUTION hint: relink its neighbours (or move head / tail); clear its links; count down
        prev, nxt = block.prev_free_block, block.next_free_block
        if prev is None and nxt is None and self.head is not block:
            raise ValueError(f"{block} is not in the free queue")
        if prev is not None:
            prev.next_free_block = nxt
        else:
            self.head = nxt
        if nxt is not None:
            nxt.prev_free_block = prev
        else:
            self.tail = prev
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1
        # END SOLUTION

    def append(self, block: KVCacheBlock) -> None:
        """Put `block` at the back (it will be reused last)."""
        # BEGIN SOLUTION hint: link after the tail (or become head and tail of an empty queue); count up
        block.prev_free_block, block.next_free_block = self.tail, None
        if self.tail is not None:
            self.tail.next_free_block = block
        else:
            self.head = block
        self.tail = block
        self.num_free_blocks += 1
        # END SOLUTION

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        """The queue front to back. Given (for tests and debugging)."""
        out, b = [], self.head
        while b is not None:
            out.append(b)
            b = b.next_free_block
        return out
