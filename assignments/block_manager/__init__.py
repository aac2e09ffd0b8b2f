"""Assignment 2: the paged KV-cache block allocator. Read README.md first.

You write:  block.py         (FreeKVCacheBlockQueue)
            hashing.py       (hash_block_tokens)
            block_pool.py    (BlockPool)
            kv_cache_manager.py (KVCacheManager)
Given:      naive.py         (the contiguous max-length allocator you compare against)
"""
