"""Block hashes for prefix caching (vLLM v1: hash_block_tokens in kv_cache_utils.py).

A full block is identified by its tokens AND everything before them: the hash of block i is
hash(hash of block i-1, tokens of block i). Two prompts share block i's KV only if they agree
on all tokens up to the end of block i, which is exactly when the cached keys and values
(which depend on every earlier token through attention) are the same.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Sequence


def hash_block_tokens(parent_block_hash: int | None, token_ids: Sequence[int]) -> int:
    """A 64-bit int for (parent hash, tokens), stable across processes and machines.

    Use a real digest (hashlib.sha256 over a fixed encoding of the parent and the tokens), not
    Python's hash(): the prefix cache may be shared by processes, and a 64-bit collision would
    silently serve another prompt's KV. parent_block_hash is None for a sequence's first block.
    """
    raise NotImplementedError(
        "block_manager: hash_block_tokens (block_manager/hashing.py): sha256 over the parent (or a marker for None) "
        "and the tokens as fixed-width ints; first 8 bytes as an int")


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Hashes of every FULL block of `token_ids`, chained from the first. Given."""
    hashes, parent = [], None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, token_ids[start:start + block_size])
        hashes.append(parent)
    return hashes
