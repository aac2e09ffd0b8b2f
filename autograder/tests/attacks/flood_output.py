
# ---- not an attack: prints 20 MB (appended to the reference's kv_cache/kv_cache.py) ----------
import sys as _sys

_HonestCache = KVCache  # noqa: F821 - the reference's, defined above


class KVCache(_HonestCache):
    def append(self, k, v):
        for _ in range(20000):
            _sys.stdout.write("x" * 1000 + "\n")
        return super().append(k, v)
