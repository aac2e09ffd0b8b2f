
# ---- not an attack: a number that is NaN (appended to the reference's kv_cache/kv_cache.py) --
def kv_cache_bytes(config, batch_size, seq_len, dtype):
    return float("nan")
