
# ---- not an attack: a syntax error (appended to the reference's kv_cache/kv_cache.py) --------
class Broken(:
    pass
