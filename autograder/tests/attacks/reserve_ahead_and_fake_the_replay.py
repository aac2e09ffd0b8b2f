# Attack: a manager that reserves like the naive allocator (every admission takes 512 slots more
# than its prompt), with the given trace replay replaced by one that reports what the test wants.
# Appended to block_manager/kv_cache_manager.py of the reference (the replay to simulate.py).
# Caught: the grader replays the trace with its own copy (llmsys/simulate.py), counts the tokens
# itself, and checks each step that a table holds one block per block_size tokens.
_HonestManager = KVCacheManager  # noqa: F821 - the reference's, defined above


class KVCacheManager(_HonestManager):
    def allocate(self, seq_id, token_ids):
        out = _HonestManager.allocate(self, seq_id, token_ids)
        if out is not None:
            self.append_slots(seq_id, [0] * 512)  # reserved ahead: most of it never holds a token
        return out
