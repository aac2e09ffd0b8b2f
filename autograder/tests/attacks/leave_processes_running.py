
# ---- attack: leave_processes_running (appended to the reference's kv_cache/kv_cache.py) ------
# The reference, except that the append test's worker leaves a non-daemon thread, a grandchild
# in a new session (`setsid`) and a double-forked daemon, and the reset test's worker leaves two
# children, one of which ignores SIGTERM. The overflow test, after both, looks for all of them
# in the sandbox and fails if one is still there.
import os as _os
import subprocess as _subprocess
import sys as _sys
import threading as _threading
import time as _time

_HonestCache = KVCache  # noqa: F821 - the reference's, defined above


def _double_fork():
    if _os.fork() == 0:
        _os.setsid()
        if _os.fork() == 0:
            _os.execvp("sleep", ["sleep", "4103"])
        _os._exit(0)


def _survivors() -> list:
    found = []
    for pid in filter(str.isdigit, _os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sleep 410" in cmd or "leftover" in cmd:
            found.append(f"{pid}: {cmd.strip()}")
    return found


class KVCache(_HonestCache):
    def __init__(self, batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs):
        shape = (num_kv_heads, max_len, head_dim)
        if shape == (1, 8, 4):  # the overflow test
            left = _survivors()
            if left:
                raise RuntimeError(f"survivors of the previous tests: {left}")
        if shape == (3, 32, 8):  # the append test
            _threading.Thread(target=_time.sleep, args=(40,), daemon=False).start()
            _subprocess.Popen(["sh", "-c", "setsid sleep 4102 & exit 0"]).wait()
            _double_fork()
        super().__init__(batch_size, num_kv_heads, max_len, head_dim, *args, **kwargs)

    def reset(self):
        _subprocess.Popen(["sleep", "4101"])
        _subprocess.Popen([_sys.executable, "-c", "import signal, time  # leftover\n"
                           "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(4104)"])
        super().reset()
