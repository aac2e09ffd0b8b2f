"""Guards around student code inside a graded suite's process (installed by pytest_plugin.py).

Installed before any student module is imported:

* Imports. Code in the submission may not import the reference (`solutions`), a baseline
  (`vllm`, `deepspeed`, transformers' models and generation, the grader's `autograder.baselines`)
  or the graded suite's own modules (its references and checkers). The import statement fails
  with ImportError saying so. The check looks at what the import returns, so `from transformers
  import AutoModelForCausalLM` is caught although transformers loads it lazily.
* Files. Code in the submission may not open, remove or rename the graded tests
  (`autograder/suites/`, `autograder/tests/`), the reference (`solutions/`, unless that is what
  is graded), the result channel, or the grader's output folder: an audit hook
  (PEP 578, which cannot be removed) refuses it with PermissionError.
* Left running. After each test, threads started during it that still run submission code, and
  child processes started during it, are reported and the children killed: the test that
  started them scores 0.

These are guards against the natural ways, not a proof against a determined attacker with
ctypes; the grader's own checks (signed results, references bound before import, timed
outputs checked on inputs drawn from the OS's entropy, baseline kernels looked for in the
student's profile) do not depend on them.
"""
from __future__ import annotations

import builtins
import importlib
import os
import re
import signal
import site
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

from . import PACKAGE_DIR, REPO_ROOT, SUITES_DIR

PROTECT_ENV = "AUTOGRADER_PROTECT"  # extra protected paths from the grader, os.pathsep-separated

# Module names a submission may not import: the reference, the baselines, transformers' models.
_BLOCKED_MODULES = re.compile(
    r"^(solutions|vllm|deepspeed|autograder\.(baselines|bench|suites|tests))(\.|$)"
    r"|^transformers\.(modeling_|generation|pipelines|models\.[^.]+\.modeling_|integrations)")

_submission: tuple[str, ...] = ()  # the folder under test, as given and resolved, each ending in os.sep
_protected: tuple[str, ...] = ()
_library: tuple[str, ...] = ()
_real_import = builtins.__import__
_real_import_module = importlib.import_module
_installed = False


def _prefix(p: str | os.PathLike) -> str:
    return os.path.join(os.path.realpath(p), "")


def install(submission: str | os.PathLike, channel: str | None) -> None:
    """Set up the guards for a suite that grades the code in `submission`. Idempotent."""
    global _submission, _protected, _library, _installed
    if _installed:
        return
    _installed = True
    _submission = tuple({_prefix(submission), os.path.join(os.path.abspath(submission), "")})
    protected = [_prefix(SUITES_DIR), _prefix(PACKAGE_DIR / "tests")]
    solutions = _prefix(REPO_ROOT / "solutions")
    if not _prefix(submission).startswith(solutions):  # grading the reference itself: it reads its own files
        protected.append(solutions)
    if channel:
        protected.append(os.path.realpath(channel))
    # left in the environment (not secret): child processes, ZeRO's ranks, install the same guards
    protected += [_prefix(p) for p in os.environ.get(PROTECT_ENV, "").split(os.pathsep) if p]
    # a protected folder that holds the submission (say --out inside it) would lock the student out of their own code
    _protected = tuple(p for p in protected if not any(s.startswith(p) for s in _submission))
    libs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    libs |= set(site.getsitepackages()) | {site.getusersitepackages()}  # (not sys.prefix: it may be "/")
    _library = tuple(sorted({_prefix(p) for p in libs if p} | {os.path.join(p, "") for p in libs if p}))
    builtins.__import__ = _guarded_import
    importlib.import_module = _guarded_import_module
    sys.addaudithook(_audit)


def guarded() -> dict:
    """What the tamper check in pytest_plugin watches from here."""
    return {(builtins, "__import__"): _guarded_import, (importlib, "import_module"): _guarded_import_module}


def in_submission(filename: str | None) -> bool:
    # called for every import statement: a string comparison, no system call
    return bool(filename) and bool(_submission) and filename.startswith(_submission)


def _calling_file(depth: int) -> str | None:
    """The file of the first caller outside the library and <frozen>/<string> code."""
    f = sys._getframe(depth)
    while f is not None:
        name = f.f_code.co_filename
        if not name.startswith("<") and not name.startswith(_library):
            return name
        f = f.f_back
    return None


def _submission_frame_in(f) -> bool:
    """Whether frame f, or any frame it was called from, runs submission code."""
    while f is not None:
        if in_submission(f.f_code.co_filename):
            return True
        f = f.f_back
    return False


# ----------------------------------------------------------------------------- imports

def _refused(name: str) -> ImportError:
    what = ("the reference solution" if name.startswith("solutions") else
            "the graded suite's own code" if not _BLOCKED_MODULES.match(name) or name.startswith("autograder.suites")
            else "the grader's baselines" if name.startswith("autograder") else f"a baseline ({name.split('.')[0]})")
    return ImportError(f"the submission may not import {name}: that is {what}, which the grader compares against. "
                       "Write the code yourself (remove this import).", name=name)


def _forbidden(module_name: str, obj) -> bool:
    if _BLOCKED_MODULES.match(module_name or ""):
        return True
    f = getattr(obj, "__file__", None) if isinstance(obj, type(sys)) else None
    return bool(f) and os.path.realpath(f).startswith(_protected)


def _check(name: str, mod, fromlist) -> None:
    if _forbidden(name, None) or _forbidden(getattr(mod, "__name__", ""), mod):
        raise _refused(name)
    for item in fromlist or ():
        obj = getattr(mod, item, None)
        origin = obj.__name__ if isinstance(obj, type(sys)) else getattr(obj, "__module__", None) or ""
        if isinstance(origin, str) and _forbidden(origin, obj if isinstance(obj, type(sys)) else None):
            raise _refused(f"{name}.{item} ({origin})" if origin != name else f"{name}.{item}")


def _importer(globals_: dict | None) -> str | None:
    """The file that runs the import statement: its module's __file__, else the caller's frame."""
    f = globals_.get("__file__") if isinstance(globals_, dict) else None
    return f if f else _calling_file(3)


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    student = level == 0 and in_submission(_importer(globals))
    if student and _BLOCKED_MODULES.match(name):
        raise _refused(name)  # before it runs: the module itself is off limits
    mod = _real_import(name, globals, locals, fromlist, level)
    if student:
        _check(name, mod, fromlist)
    return mod


def _guarded_import_module(name, package=None):
    student = not name.startswith(".") and in_submission(_calling_file(2))
    if student and _BLOCKED_MODULES.match(name):
        raise _refused(name)
    mod = _real_import_module(name, package)
    if student:
        _check(name, mod, ())
    return mod


# ----------------------------------------------------------------------------- files

_FILE_EVENTS = {"open": (0,), "os.remove": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.truncate": (0,),
                "os.rmdir": (0,), "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (0, 1),
                "os.chmod": (0,), "os.link": (0, 1), "os.symlink": (0, 1)}


def _audit(event: str, args: tuple) -> None:
    positions = _FILE_EVENTS.get(event)
    if positions is None or not _protected:
        return
    for i in positions:
        p = args[i] if i < len(args) else None
        if isinstance(p, int) or p is None:
            continue
        try:
            path = os.path.abspath(os.fsdecode(p))
        except Exception:
            continue
        if not (path.startswith(_protected) or os.path.realpath(path).startswith(_protected)):
            continue
        if _submission_frame_in(sys._getframe(1)):
            raise PermissionError(f"the submission may not touch {path}: the grader's tests, the reference solution "
                                  "and the results are off limits to graded code")


# ----------------------------------------------------------------------------- left running

# Helper processes the standard library keeps for the whole session (multiprocessing's
# resource tracker and forkserver), started by the harness: not a test's leftovers.
_SESSION_HELPERS = re.compile(r"multiprocessing\.(resource_tracker|forkserver|semaphore_tracker)|compile_worker")


class ProcStat(NamedTuple):
    pid: int
    state: bytes
    ppid: int
    pgrp: int
    rss_pages: int


def proc_stats() -> Iterator[ProcStat]:
    """Every process's /proc/<pid>/stat: the fields the grader uses (proc(5))."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": comm may hold spaces
            yield ProcStat(int(e), rest[0], int(rest[1]), int(rest[2]), int(rest[21]))
        except (OSError, IndexError, ValueError):
            continue


def children(pid: int | None = None) -> set[int]:
    """Live direct children of `pid` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    return {st.pid for st in proc_stats() if st.ppid == pid and st.state != b"Z"}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _runs_submission(t: threading.Thread) -> bool:
    """A thread whose target is submission code, or that is running submission code now. (Libraries
    keep helper threads for the whole session, tqdm's monitor say: those are not a test's.)"""
    if not t.is_alive():
        return False
    target = getattr(t, "_target", None) or getattr(type(t), "run", None)
    if in_submission(getattr(getattr(target, "__code__", None), "co_filename", None)):
        return True
    return _submission_frame_in(sys._current_frames().get(t.ident))


class Snapshot:
    """Threads and child processes alive when a test starts."""

    def __init__(self):
        self.threads = set(threading.enumerate())
        self.children = children()

    def leftovers(self, grace_s: float = 1.0) -> list[str]:
        """What the test started and left running: threads (named) and children (killed)."""
        deadline = time.time() + grace_s
        new_threads = [t for t in threading.enumerate() if t not in self.threads and _runs_submission(t)]
        for t in new_threads:
            t.join(timeout=max(0.0, deadline - time.time()))
        found = [f"thread {t.name!r}" for t in new_threads if t.is_alive() and _runs_submission(t)]
        new_children = set()
        while True:
            new_children = {p for p in children() - self.children if not _SESSION_HELPERS.search(_cmdline(p))}
            if not new_children or time.time() > deadline:
                break
            time.sleep(0.05)
        for p in sorted(new_children):
            found.append(f"process {p} ({_cmdline(p)[:80]})")
            kill_tree(p)
        return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (parents before children). Zombies too: a process
    whose main thread exited shows "Z" but can run on, and so can what it started."""
    kids: dict[int, list[int]] = {}
    for st in proc_stats():
        kids.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_all(pids) -> None:
    """SIGKILL each of these processes (gone or not ours: skipped)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (children first seen, then the process)."""
    for c in children(pid):
        kill_tree(c)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, os.WNOHANG)
    except (ProcessLookupError, ChildProcessError, PermissionError):
        pass
