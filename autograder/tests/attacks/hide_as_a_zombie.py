
# ---- attack: hide_as_a_zombie (appended to the reference's kv_cache/kv_cache.py) -------------
# A process whose main thread has exited while another thread runs on shows as a zombie ("Z")
# in /proc/<pid>/stat, though it is alive. reset() (the reset test) forks a child that starts a
# thread touching /tmp/alive, then ends its main thread alone (the raw exit syscall, not
# exit_group). The overflow test, after it, fails if /tmp/alive is still being touched.
import ctypes as _ctypes
import os as _os
import platform as _platform
import threading as _threading
import time as _time

_HonestCache = KVCache  # noqa: F821 - the reference's, defined above
_SYS_EXIT = {"x86_64": 60, "aarch64": 93}[_platform.machine()]


def _touch_forever():
    while True:
        with open("/tmp/alive", "w") as f:
            f.write(str(_os.getpid()))
        _time.sleep(0.05)


def _hide():
    if _os.fork() == 0:
        _threading.Thread(target=_touch_forever).start()
        _ctypes.CDLL(None).syscall(_SYS_EXIT, 0)  # this thread only


class KVCache(_HonestCache):
    def __init__(self, batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs):
        if (num_kv_heads, max_len, head_dim) == (1, 8, 4) and _os.path.exists("/tmp/alive"):  # the overflow test
            before = _os.stat("/tmp/alive").st_mtime_ns
            _time.sleep(1.0)
            if _os.stat("/tmp/alive").st_mtime_ns != before:
                raise RuntimeError("survivor: the process started by the previous test is still running")
        super().__init__(batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs)

    def reset(self):
        _hide()
        _time.sleep(0.5)
        super().reset()
