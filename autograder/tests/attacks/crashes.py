
# ---- attack: crashes (appended to the reference's kv_cache/kv_cache.py) ----------------------
# Not an attack, a broken submission: the reference, except that
#   the append test's cache (3 heads x 32 x 8) -> segmentation fault
#   reset()                                    -> os._exit(3)
#   the overflow test's cache (1 head x 8 x 4) -> SIGKILL to itself
#   kv_cache_bytes of one token                -> an endless loop
# Each must cost its own test only; the formula tests after them are honest and must pass.
import ctypes as _ctypes
import os as _os
import signal as _signal

_HonestCache, _honest_bytes = KVCache, kv_cache_bytes  # noqa: F821 - the reference's, defined above


class KVCache(_HonestCache):
    def __init__(self, batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs):
        if (num_kv_heads, max_len, head_dim) == (3, 32, 8):
            _ctypes.string_at(0)
        if (num_kv_heads, max_len, head_dim) == (1, 8, 4):
            _os.kill(_os.getpid(), _signal.SIGKILL)
        super().__init__(batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs)

    def reset(self):
        _os._exit(3)


def kv_cache_bytes(config, batch_size, seq_len, dtype):
    while batch_size == 1 and seq_len == 1:
        pass
    return _honest_bytes(config, batch_size, seq_len, dtype)
