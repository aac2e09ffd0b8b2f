"""Assignment 1: the KV cache. Read README.md first.

You write:  kv_cache.py  (kv_cache_bytes, KVCache)
            attention.py (repeat_kv, attend, Attention.forward)
            sampling.py  (apply_top_k_top_p, sample)
            generate.py  (generate)
Given:      model.py     (the decoder around your attention, and checkpoint loading)
"""
