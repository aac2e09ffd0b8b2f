"""Per-sequence block tables on top of the BlockPool (vLLM v1: vllm/v1/core/kv_cache_manager.py).

A sequence's block table maps its logical blocks (token i lives in logical block
i // block_size at offset i % block_size) to physical blocks. The slot of token i is

    slot_mapping[i] = block_table[i // block_size] * block_size + i % block_size

which is where the kernels of assignment 3 write its K and V.

Sharing: a block may appear in several tables (a prefix-cache hit, or fork() for parallel
sampling); its ref_cnt counts them. A shared block is read-only: before a sequence writes a
token into a shared, partly filled last block, it gets a private copy (copy-on-write), and
the manager records (src_block_id, dst_block_id) for the engine to copy the KV already there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .block import KVCacheBlock
from .block_pool import BlockPool
from .hashing import block_hashes, hash_block_tokens


@dataclass
class SequenceBlocks:
    """What the manager knows of one sequence. Given."""

    token_ids: list[int] = field(default_factory=list)   # every token that has a slot
    blocks: list[KVCacheBlock] = field(default_factory=list)


@dataclass
class Allocation:
    """The answer to allocate(). Given."""

    num_computed_tokens: int   # tokens whose KV the prefix cache already holds (skip computing them)
    slot_mapping: list[int]    # slots of the tokens to compute: token_ids[num_computed_tokens:]


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 watermark: float = 0.01):
        """Given. watermark: the share of blocks kept free when admitting new sequences, so that
        running sequences can still grow by a few tokens without being preempted at once."""
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, enable_caching=enable_prefix_caching)
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark_blocks = int(watermark * num_blocks)
        self.seqs: dict[str, SequenceBlocks] = {}
        self.pending_copies: list[tuple[int, int]] = []

    # ----- queries (given) -------------------------------------------------------------
    def get_block_table(self, seq_id: str) -> list[int]:
        return [b.block_id for b in self.seqs[seq_id].blocks]

    def num_tokens(self, seq_id: str) -> int:
        return len(self.seqs[seq_id].token_ids)

    def get_num_free_blocks(self) -> int:
        return self.pool.get_num_free_blocks()

    def take_copies(self) -> list[tuple[int, int]]:
        """Copy-on-write operations recorded since the last call: (src_block_id, dst_block_id)."""
        out, self.pending_copies = self.pending_copies, []
        return out

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ----- what you write --------------------------------------------------------------
    def get_computed_blocks(self, token_ids: list[int]) -> list[KVCacheBlock]:
        """The longest run of cached full blocks that starts the prompt `token_ids`.

        Look up block_hashes(token_ids) in order and stop at the first miss. At most
        (len(token_ids) - 1) // block_size blocks: even a fully cached prompt must compute
        its last token, whose logits sample the first output token. Changes no ref count.
        Returns [] when prefix caching is off.
        """
        raise NotImplementedError(
            "block_manager: KVCacheManager.get_computed_blocks (block_manager/kv_cache_manager.py): hash only the "
            "first (len - 1) tokens' full blocks; pool.get_cached_block until a miss")

    def can_allocate(self, num_new_blocks: int) -> bool:
        """True if taking num_new_blocks still leaves the watermark free."""
        raise NotImplementedError(
            "block_manager: KVCacheManager.can_allocate (block_manager/kv_cache_manager.py): free blocks - "
            "num_new_blocks >= watermark_blocks")

    def allocate(self, seq_id: str, token_ids: list[int]) -> Allocation | None:
        """Admit a new sequence with prompt `token_ids`.

        Reuse the cached prefix (get_computed_blocks; touch() the hits), then allocate blocks
        for the rest and return the slots of the tokens that must be computed. Returns None,
        changing nothing, if the new blocks would break the watermark (can_allocate). A cached
        block that is free right now counts as a new block for that check, since reviving it
        takes it out of the free queue.
        """
        raise NotImplementedError(
            "block_manager: KVCacheManager.allocate (block_manager/kv_cache_manager.py): hits = get_computed_blocks; "
            "check can_allocate(new + revived); touch(hits); append the rest")

    def append_slots(self, seq_id: str, token_ids: list[int]) -> list[int] | None:
        """Give slots to new tokens of a running sequence (one per decode step).

        Fills the last block, then new blocks. If the last block is shared (ref_cnt > 1) and
        partly filled, first replace it by a private copy: a new block, with (old, new) ids
        recorded in pending_copies, and one reference to the old block dropped. Blocks that
        become full are hashed (chained to the previous block's hash) and cached. Returns
        None, changing nothing, if the pool has too few free blocks (no watermark here:
        running sequences may use it).
        """
        raise NotImplementedError(
            "block_manager: KVCacheManager.append_slots (block_manager/kv_cache_manager.py): count blocks needed (+1 "
            "for copy-on-write) against free blocks; then _append")

    def _needs_cow(self, seq: SequenceBlocks) -> int:
        """A helper of append_slots and _append: 1 if the next token needs a private copy of the
        last block first, else 0. Not called by the tests: write it if you use it."""
        raise NotImplementedError(
            "block_manager: KVCacheManager._needs_cow (block_manager/kv_cache_manager.py): 1 if the last block is "
            "partly filled and shared")

    def _append(self, seq: SequenceBlocks, token_ids: list[int]) -> list[int]:
        """Slots for token_ids appended to seq (blocks available: checked by the caller)."""
        raise NotImplementedError(
            "block_manager: KVCacheManager._append (block_manager/kv_cache_manager.py): copy-on-write first; per "
            "token: new block at a block boundary; slot = id * bs + offset; cache blocks that fill up")

    def fork(self, parent_id: str, child_id: str) -> None:
        """The child shares every block of the parent (parallel sampling, beam search)."""
        raise NotImplementedError(
            "block_manager: KVCacheManager.fork (block_manager/kv_cache_manager.py): copy the token list and block "
            "list; touch() the blocks")

    def free(self, seq_id: str) -> None:
        """Release a finished (or preempted) sequence's blocks, tail first. KeyError if unknown."""
        raise NotImplementedError(
            "block_manager: KVCacheManager.free (block_manager/kv_cache_manager.py): pop the sequence; "
            "pool.free_blocks(reversed(blocks))")
