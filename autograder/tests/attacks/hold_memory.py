
# ---- attack: hold_memory (appended to the reference's kv_cache/kv_cache.py) ------------------
# Hold host memory where the grader might not count it. The test appends HOG_BYTES and MODES
# (which of the three below run).
#   the append test: the worker itself keeps allocating (the runner must kill it at the limit)
#   the reset test:  a child in a new session (setsid) holds HOG_BYTES and the worker waits
#   the overflow test: the worker holds HOG_BYTES in an anonymous memfd (memory no process maps)
import os as _os
import subprocess as _subprocess
import sys as _sys
import time as _time

HOG_BYTES = 0
MODES: set = set()
_HonestCache = KVCache  # noqa: F821 - the reference's, defined above
_CHILD = "import sys, time; hog = b'x' * int(sys.argv[1]); time.sleep(60)"


class KVCache(_HonestCache):
    def __init__(self, batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs):
        super().__init__(batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs)
        if (num_kv_heads, max_len, head_dim) == (3, 32, 8) and "grow" in MODES:  # the append test
            hog = []
            for _ in range(HOG_BYTES >> 26):
                hog.append(b"x" * (1 << 26))
            _time.sleep(5)
        if (num_kv_heads, max_len, head_dim) == (1, 8, 4) and "memfd" in MODES:  # the overflow test
            fd = _os.memfd_create("hog")
            chunk = b"x" * (1 << 26)
            for _ in range(HOG_BYTES >> 26):
                _os.write(fd, chunk)
            _time.sleep(5)
            _os.close(fd)

    def reset(self):
        if "child" in MODES:
            _subprocess.Popen([_sys.executable, "-c", _CHILD, str(HOG_BYTES)], start_new_session=True)
            _time.sleep(8)
        super().reset()
