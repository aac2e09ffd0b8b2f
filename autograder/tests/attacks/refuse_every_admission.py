# Attack: a manager that admits nothing (allocate() always None): with no sequence, every invariant
# of the property test holds vacuously. Appended to block_manager/kv_cache_manager.py of the stubs.
# Caught: a refused allocate() must be justified by the free blocks the block tables leave, and
# the pool must hold its num_blocks blocks.
class _Pool:
    blocks = []


class KVCacheManager:
    def __init__(self, num_blocks, block_size, enable_prefix_caching=True, watermark=0.01):
        self.num_blocks, self.pool = num_blocks, _Pool()

    def allocate(self, seq_id, token_ids):
        return None                      # "no room"

    def get_num_free_blocks(self):
        return self.num_blocks

    def take_copies(self):
        return []
