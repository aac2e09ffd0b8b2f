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
        # BEGIN SOLUTION hint: hash only the first (len - 1) tokens' full blocks; pool.get_cached_block until a miss
        if not self.enable_prefix_caching:
            return []
        hits = []
        for h in block_hashes(token_ids[:len(token_ids) - 1], self.block_size):
            block = self.pool.get_cached_block(h)
            if block is None:
                break
            hits.append(block)
        return hits
        # END SOLUTION

    def can_allocate(self, num_new_blocks: int) -> bool:
        """True if taking num_new_blocks still leaves the watermark free."""
        # BEGIN SOLUTION hint: free blocks - num_new_blocks >= watermark_blocks
        return self.get_num_free_blocks() - num_new_blocks >= self.watermark_blocks
        # END SOLUTION

    def allocate(self, seq_id: str, token_ids: list[int]) -> Allocation | None:
        """Admit a new sequence with prompt `token_ids`.

        Reuse the cached prefix (get_computed_blocks; touch() the hits), then allocate blocks
        for the rest and return the slots of the tokens that must be computed. Returns None,
        changing nothing, if the new blocks would break the watermark (can_allocate). A cached
        block that is free right now counts as a new block for that check, since reviving it
        takes it out of the free queue.
        """
        # BEGIN SOLUTION hint: hits = get_computed_blocks; check can_allocate(new + revived); touch(hits);
        #   append the rest
        if seq_id in self.seqs:
            raise ValueError(f"sequence {seq_id!r} is already allocated; free it first")
        if not token_ids:
            raise ValueError("a prompt needs at least one token")
        hits = self.get_computed_blocks(token_ids)
        num_computed = len(hits) * self.block_size
        revived = sum(1 for b in hits if b.ref_cnt == 0)
        new = self.blocks_needed(len(token_ids)) - len(hits)
        if not self.can_allocate(new + revived):
            return None
        self.pool.touch(hits)
        seq = SequenceBlocks(token_ids=list(token_ids[:num_computed]), blocks=list(hits))
        self.seqs[seq_id] = seq
        slots = self._append(seq, token_ids[num_computed:])
        return Allocation(num_computed, slots)
        # END SOLUTION

    def append_slots(self, seq_id: str, token_ids: list[int]) -> list[int] | None:
        """Give slots to new tokens of a running sequence (one per decode step).

        Fills the last block, then new blocks. If the last block is shared (ref_cnt > 1) and
        partly filled, first replace it by a private copy: a new block, with (old, new) ids
        recorded in pending_copies, and one reference to the old block dropped. Blocks that
        become full are hashed (chained to the previous block's hash) and cached. Returns
        None, changing nothing, if the pool has too few free blocks (no watermark here:
        running sequences may use it).
        """
        # BEGIN SOLUTION hint: count blocks needed (+1 for copy-on-write) against free blocks; then _append
        seq = self.seqs[seq_id]
        n_old = len(seq.token_ids)
        needed = self.blocks_needed(n_old + len(token_ids)) - len(seq.blocks)
        cow = self._needs_cow(seq) if token_ids else 0  # no token, nothing written: no copy
        if needed + cow > self.get_num_free_blocks():
            return None
        return self._append(seq, token_ids)
        # END SOLUTION

    def _needs_cow(self, seq: SequenceBlocks) -> int:
        """A helper of append_slots and _append: 1 if the next token needs a private copy of the
        last block first, else 0. Not called by the tests: write it if you use it."""
        # BEGIN SOLUTION hint: 1 if the last block is partly filled and shared
        partial = len(seq.token_ids) % self.block_size != 0
        return int(bool(seq.blocks) and partial and seq.blocks[-1].ref_cnt > 1)
        # END SOLUTION

    def _append(self, seq: SequenceBlocks, token_ids: list[int]) -> list[int]:
        """Slots for token_ids appended to seq (blocks available: checked by the caller)."""
        # BEGIN SOLUTION hint: copy-on-write first; per token: new block at a block boundary; slot = id * bs + offset;
        #   cache blocks that fill up
        bs = self.block_size
        if token_ids and self._needs_cow(seq):
            old = seq.blocks[-1]
            new = self.pool.get_new_blocks(1)[0]
            self.pool.free_blocks([old])
            seq.blocks[-1] = new
            self.pending_copies.append((old.block_id, new.block_id))
        slots = []
        for tok in token_ids:
            i = len(seq.token_ids)
            if i % bs == 0:
                seq.blocks.extend(self.pool.get_new_blocks(1))
            seq.token_ids.append(tok)
            block = seq.blocks[i // bs]
            slots.append(block.block_id * bs + i % bs)
            if (i + 1) % bs == 0 and self.enable_prefix_caching and block.block_hash is None:
                parent = seq.blocks[i // bs - 1].block_hash if i // bs > 0 else None
                self.pool.cache_full_block(block, hash_block_tokens(parent, seq.token_ids[i + 1 - bs:i + 1]))
        return slots
        # END SOLUTION

    def fork(self, parent_id: str, child_id: str) -> None:
        """The child shares every block of the parent (parallel sampling, beam search)."""
        # BEGIN SOLUTION hint: copy the token list and block list; touch() the blocks
        if child_id in self.seqs:
            raise ValueError(f"sequence {child_id!r} already exists")
        parent = self.seqs[parent_id]
        self.pool.touch(parent.blocks)
        self.seqs[child_id] = SequenceBlocks(list(parent.token_ids), list(parent.blocks))
        # END SOLUTION

    def free(self, seq_id: str) -> None:
        """Release a finished (or preempted) sequence's blocks, tail first. KeyError if unknown."""
        # BEGIN SOLUTION hint: pop the sequence; pool.free_blocks(reversed(blocks))
        if seq_id not in self.seqs:
            raise KeyError(f"sequence {seq_id!r} is not allocated (freed twice?)")
        seq = self.seqs.pop(seq_id)
        self.pool.free_blocks(list(reversed(seq.blocks)))
        # END SOLUTION
