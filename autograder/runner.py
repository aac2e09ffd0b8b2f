"""Runs one assignment's graded suite in its own subprocess, and survives whatever it does.

A hang, segfault, os._exit, CUDA fault or out-of-memory (GPU, or host: the suite's resident
memory is watched) is charged to the test that was running, with its reason; the suite is then
restarted on the tests not yet run, so one broken function costs only its own tests. Results
arrive as signed records through a file (see pytest_plugin.py); stdout and stderr go to a
capped log and are never parsed for scores. When the suite ends, whatever it left running
(its process group, and orphans that escaped it: this process is their subreaper) is killed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from . import REPO_ROOT, SUITES_DIR, config
from .remote import isolation
from .impl import ENV_VAR as IMPL_ENV, MODE_ENV
from .pytest_plugin import CHANNEL_ENV, KEY_ENV, TIERS_ENV, TIMEOUT_ENV
from .sandbox import PROTECT_ENV, children, descendants, kill_tree, proc_stats
from .results import AssignmentResult, TestResult

# Lines in a crashed suite's output that explain the crash better than its exit code.
_CRASH_PATTERNS = [
    (re.compile(r"CUDA error: an illegal memory access[^\n]*"), "CUDA illegal memory access"),
    (re.compile(r"(?:torch\.)?(?:cuda\.)?OutOfMemoryError[^\n]*|CUDA out of memory[^\n]*"), "GPU out of memory"),
    (re.compile(r"CUDA error:[^\n]*"), None),
    (re.compile(r"MemoryError[^\n]*"), "host out of memory"),
]


class CappedLog:
    """Keeps the head and the tail of a stream, so a suite printing millions of lines is harmless."""

    def __init__(self, stream, head: int, tail: int):
        self.head, self.tail = bytearray(), bytearray()
        self.head_cap, self.tail_cap, self.dropped = head, tail, 0
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for chunk in iter(lambda: stream.read(65536), b""):
            room = self.head_cap - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                if len(self.tail) > self.tail_cap:
                    self.dropped += len(self.tail) - self.tail_cap
                    del self.tail[: len(self.tail) - self.tail_cap]

    def snapshot(self) -> str:
        """What was read so far (the stream may still be open)."""
        return (bytes(self.head[-16384:]) if not self.tail else bytes(self.tail[-16384:])).decode(errors="replace")

    def text(self) -> str:
        self.thread.join(timeout=5)
        mid = f"\n[... {self.dropped} bytes of output dropped ...]\n" if self.dropped else ""
        return (bytes(self.head).decode(errors="replace") + mid + bytes(self.tail).decode(errors="replace"))


MAX_RECORD_BYTES = 1 << 20       # one record line; longer ones are rejected unread
MAX_READ_BYTES = 8 << 20         # read from the channel per poll


def read_records(path: Path, key: bytes, offset: int = 0) -> tuple[list[dict], int, int]:
    """Signed records from the channel file after `offset`: (records, new offset, rejected).
    Reads are bounded: at most MAX_READ_BYTES per call, and a line over MAX_RECORD_BYTES is
    skipped (and counted as rejected) without being held in memory."""
    good, bad = [], 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(MAX_READ_BYTES)
    end = data.rfind(b"\n") + 1  # only whole lines
    if end == 0 and len(data) >= MAX_RECORD_BYTES:  # one endless line: skip what was read
        return [], offset + len(data), 1
    for line in data[:end].splitlines():
        if len(line) > MAX_RECORD_BYTES:
            bad += 1
            continue
        try:
            outer = json.loads(line)
            body = outer["rec"]
            ok = hmac.compare_digest(outer["sig"], hmac.new(key, body.encode(), hashlib.sha256).hexdigest())
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            good.append(json.loads(body))
        else:
            bad += 1
    return good, offset + end, bad


def crash_reason(returncode: int | None, log: str, killed_for: str | None) -> str:
    if killed_for:
        return killed_for
    for pattern, label in _CRASH_PATTERNS:
        m = None
        for m in pattern.finditer(log):
            pass
        if m:
            return f"{label}: {m.group(0).strip()[:200]}" if label else m.group(0).strip()[:240]
    if returncode is not None and returncode < 0 or "Fatal Python error: Segmentation fault" in log:
        returncode = returncode if returncode is not None and returncode < 0 else -signal.SIGSEGV
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        what = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed (out of memory?)", "SIGABRT": "aborted",
                "SIGBUS": "bus error", "SIGFPE": "floating-point exception"}.get(name, name)
        return f"the test process died: {what} ({name})"
    return f"the test process exited with code {returncode} in the middle of the test (sys.exit / os._exit?)"


def _suite_env(impl_root: Path, channel: Path, key: str, protect: list[Path] = (), mode: str = "worker",
               tiers: set[str] | None = None, per_test_timeout: float = 300) -> dict:
    env = dict(os.environ)
    env[IMPL_ENV] = str(impl_root)
    env[MODE_ENV] = mode
    env[TIERS_ENV] = ",".join(sorted(tiers)) if tiers else ""
    env[TIMEOUT_ENV] = str(per_test_timeout)
    env[CHANNEL_ENV] = str(channel)
    env[KEY_ENV] = key
    env[PROTECT_ENV] = os.pathsep.join(str(p) for p in protect)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write __pycache__ into a submission folder
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _pytest_cmd(suite: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", str(suite), "-p", "autograder.pytest_plugin", "-p", "no:cacheprovider",
            "-q", "--tb=short", "-rN", "--color=no", "-o", "addopts=", "-o", "console_output_style=classic",
            "-c", str(SUITES_DIR / "pytest.ini"), "--rootdir", str(SUITES_DIR), *extra]


def host_memory_limit() -> float:
    """Bytes of resident memory a suite may use (grading.toml host_memory_gb; 0: 3/4 of this machine's)."""
    gb = float(config.limits().get("host_memory_gb", 0))
    if gb > 0:
        return gb * 2**30
    return 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tree_rss(pid: int) -> int:
    """Memory held by a process and every process below it (its sandboxed workers and whatever they
    started, in new sessions too: they stay below it in the process tree), from /proc: resident
    pages, plus what no process maps but still holds: anonymous memory files (memfd) open in them,
    and the sandboxes' in-memory /tmp and /dev/shm."""
    page = os.sysconf("SC_PAGE_SIZE")
    stats = list(proc_stats())
    kids: dict[int, list] = {}
    for st in stats:
        kids.setdefault(st.ppid, []).append(st)
    tree = [st for st in stats if st.pid == pid]
    todo = [pid]
    while todo:
        for st in kids.get(todo.pop(), []):
            tree.append(st)
            todo.append(st.pid)
    total = sum(st.rss_pages * page for st in tree)
    memfds, roots = set(), set()
    for st in tree:
        try:
            for fd in os.listdir(f"/proc/{st.pid}/fd"):
                try:
                    if os.readlink(f"/proc/{st.pid}/fd/{fd}").startswith("/memfd:"):
                        s = os.stat(f"/proc/{st.pid}/fd/{fd}")
                        memfds.add((s.st_ino, s.st_blocks * 512))
                except OSError:
                    continue
            root = os.stat(f"/proc/{st.pid}/root")
            if (root.st_dev, root.st_ino) != _HOST_ROOT:
                roots.add(((root.st_dev, root.st_ino), st.pid))
        except OSError:
            continue
    total += sum(size for _, size in memfds)
    for mount in {key: p for key, p in roots}.values():  # one sandbox file system: count once
        for sub in ("tmp", "dev/shm"):
            try:
                v = os.statvfs(f"/proc/{mount}/root/{sub}")
                total += (v.f_blocks - v.f_bfree) * v.f_frsize
            except OSError:
                pass
    return total


def _host_root() -> tuple[int, int]:
    s = os.stat("/")
    return s.st_dev, s.st_ino


_HOST_ROOT = _host_root()


def _become_subreaper() -> None:
    """Orphans of the suite (a double fork that escapes its process group) become our children,
    so they can be found and killed. Linux only; elsewhere the process group kill must do."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        pass


def _private_caches(tmp: Path) -> dict[str, str]:
    """Caches an in-process pass writes (DeepSpeed's JIT-built op takes a lock in its folder): a
    private copy each, so one submission cannot plant a library that the next one loads."""
    from llmsys.models import cache_dir

    out = {}
    ext = cache_dir() / "torch_extensions"
    if ext.is_dir():
        mine = tmp / "torch_extensions"
        shutil.copytree(ext, mine, symlinks=True)
        for dirpath, dirs, files in os.walk(mine):
            os.chmod(dirpath, 0o777)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o666 | (os.stat(os.path.join(dirpath, f)).st_mode & 0o111))
        out[str(mine)] = str(ext)
    return out


def prepare_baselines(name: str) -> None:
    """Build, here, what a pass that runs submission code would otherwise build where it can be
    tampered with: the course checkpoints its suite names (read-only in the sandbox), and
    DeepSpeed's CPU Adam op for zero (about a minute, once per machine; the pass gets a copy)."""
    from llmsys import DATA_DIR
    from llmsys.models import model_path

    source = "\n".join(p.read_text() for p in (SUITES_DIR / name).glob("*.py"))
    for cfg in sorted((DATA_DIR / "models").glob("*.json")):
        if f'"{cfg.stem}"' in source:
            model_path(cfg.stem)
    if name != "zero":
        return
    from llmsys.models import cache_dir

    ext = cache_dir() / "torch_extensions"
    if any(ext.rglob("*.so")):
        return
    env = dict(os.environ, DS_ACCELERATOR="cpu", TORCH_EXTENSIONS_DIR=str(ext))
    subprocess.run([sys.executable, "-c",
                    "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()"],
                   env=env, capture_output=True, timeout=900)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def passes(name: str, cuda: bool) -> list[tuple[str, set[str] | None]]:
    """(mode, tiers) per pytest run of a suite. The worker pass comes first: it is trusted, and its
    collection is the test list and points the runner grades against. An in-process pass may only
    report the tiers it was started for. Without CUDA the GPU tiers are 'not graded here' in the
    worker pass, so no in-process pass is needed."""
    inproc = config.inprocess_tiers(name)
    if inproc >= {"correctness", "gpu", "speed"}:
        return [("inprocess", None)]
    if not cuda or not inproc:
        return [("worker", None)]
    return [("worker", {"correctness", "gpu", "speed"} - inproc), ("inprocess", inproc)]


class AssignmentRun:
    """Grades one assignment: a pass per isolation mode, each restarted after a crash on the tests
    it has not finished, with time, memory and record checks; see run_assignment."""

    def __init__(self, name: str, impl_root: Path, *, log_dir: Path | None, progress: Callable[[str], None] | None,
                 per_test_timeout: float | None, suite_timeout: float | None, keyword: str | None,
                 host_memory_gb: float | None, protect: list[Path]):
        lim = config.limits()
        self.name, self.impl_root, self.log_dir, self.keyword = name, impl_root, log_dir, keyword
        self.protect = [*protect, *([log_dir] if log_dir else [])]
        self.per_test_timeout = per_test_timeout or float(lim["per_test_timeout_s"])
        self.suite_timeout = suite_timeout or float(lim["suite_timeout_s"])
        self.mem_limit = host_memory_gb * 2**30 if host_memory_gb else host_memory_limit()
        self.exit_grace = float(lim.get("exit_grace_s", 10))
        self.max_restarts = int(lim["max_restarts"])
        self.say = progress or (lambda s: None)
        self.result = AssignmentResult(name=name, title=config.title(name))
        self.tests: dict[str, TestResult] = {}
        self.order: list[str] = []
        self.done: set[str] = set()
        self.logs: list[str] = []
        self.trusted_list = False
        self.rejected: list[str] = []

    # ------------------------------------------------------------------ records
    def _collected(self, tests: list[dict], trusted: bool) -> None:
        if self.trusted_list and not trusted:
            return  # an untrusted process may not add tests or change points
        for t in tests:
            if t["nodeid"] not in self.tests:
                self.tests[t["nodeid"]] = TestResult(assignment=self.name, nodeid=t["nodeid"], name=t["name"],
                                                     tier=t["tier"], max_score=float(t["points"]))
                self.order.append(t["nodeid"])
        self.trusted_list = self.trusted_list or trusted

    def _result(self, r: dict, allowed: set[str] | None) -> None:
        nodeid = r.get("nodeid")
        t = self.tests.get(nodeid)
        why = ("a test the grader did not collect" if t is None else
               "a test this pass does not run" if allowed is not None and t.tier not in allowed else
               "a test that already has its result" if nodeid in self.done else
               f"a score above the test's {t.max_score:g} points" if float(r.get("score", 0)) > t.max_score + 1e-9 else
               "a status the grader does not know" if r.get("status") not in ("passed", "failed", "not_graded")
               else None)
        if why:
            self.rejected.append(f"{str(nodeid)[:120]}: {why}")
            return
        t.status, t.reason = r["status"], str(r.get("reason", ""))[:4000]
        t.score = min(max(float(r["score"]), 0.0), t.max_score) if t.status == "passed" else 0.0
        t.duration, t.extra = float(r.get("duration", 0.0)), dict(r.get("extra") or {})
        self.done.add(nodeid)

    # ------------------------------------------------------------------ one pytest process
    def _attempt(self, mode: str, tiers: set[str] | None, attempt: int, t0: float) -> tuple[bool, bool]:
        """Run the pass once on the tests it has not finished. Returns (finished, restart_requested)."""
        trusted = mode == "worker"
        deselect = [a for n in self.done for a in ("--deselect", n)]
        extra = (["-k", self.keyword] if self.keyword else []) + deselect
        key = secrets.token_hex(16)
        current: str | None = None
        started, killed_for, finished, restart_for, done_at, lingered = time.time(), None, False, None, None, False
        with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
            channel = Path(tmp) / "channel.jsonl"
            channel.touch()
            env = _suite_env(self.impl_root, channel, key, self.protect, mode, tiers, self.per_test_timeout)
            cmd = _pytest_cmd(SUITES_DIR / self.name, extra)
            if not trusted:  # this pytest process runs submission code: it goes into the sandbox too
                os.chmod(channel, 0o666)
                cmd, iso = isolation.suite_command(cmd, Path(tmp), self.impl_root, _private_caches(Path(tmp)))
                env.update(HOME="/tmp", TMPDIR="/tmp")
                self.result.isolation[",".join(sorted(tiers)) if tiers else "all"] = (
                    f"in-process, in {iso.describe()}: the test process runs submission code behind the legacy "
                    "guards; the runner trusts it only with its own tiers (docs/grading.md)")
            proc = subprocess.Popen(cmd, cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            log = CappedLog(proc.stdout, int(config.limits()["log_head_bytes"]), int(config.limits()["log_tail_bytes"]))
            offset, next_rss = 0, 0.0

            def take(recs: list[dict]) -> None:
                nonlocal current, started, finished, done_at, restart_for
                for r in recs:
                    kind = r.get("type")
                    if kind == "collected":
                        self._collected(r.get("tests", []), trusted)
                    elif kind == "start":
                        current, started = r.get("nodeid"), time.time()
                        self.say(f"[{self.name}] {len(self.done) + 1}/{len(self.order)} {str(current).split('::')[-1]}")
                    elif kind == "result":
                        self._result(r, tiers)
                        current = None if current == r.get("nodeid") else current
                    elif kind == "isolation" and trusted:
                        self.result.isolation[",".join(sorted(tiers)) if tiers else "all"] = f"worker: {r.get('level')}"
                    elif kind == "done":
                        finished, done_at = True, time.time()
                    elif kind == "restart":
                        restart_for = str(r.get("reason", ""))[:400]

            while True:
                rc = proc.poll()
                recs, offset, bad = read_records(channel, key.encode(), offset)
                if bad:
                    self.rejected.append(f"{bad} forged, corrupt or oversized result record(s)")
                take(recs)
                if rc is not None:
                    break
                now = time.time()
                if finished and now - done_at > self.exit_grace:
                    lingered = True
                    _kill_group(proc)
                    proc.wait()
                    break
                if now >= next_rss:
                    next_rss = now + 0.5
                    rss = tree_rss(proc.pid)
                    if rss > self.mem_limit:
                        killed_for = (f"host out of memory: the test used {rss / 2**30:.1f} GB of RAM, over the "
                                      f"{self.mem_limit / 2**30:.1f} GB limit "
                                      "(host_memory_gb in autograder/grading.toml)")
                if killed_for is None and current is not None and now - started > self.per_test_timeout:
                    killed_for = f"timed out after {self.per_test_timeout:.0f} s (infinite loop or deadlock?)"
                elif killed_for is None and now - t0 > self.suite_timeout:
                    killed_for = f"the assignment's suite ran past its {self.suite_timeout:.0f} s limit"
                if killed_for:
                    _kill_tree_of(proc)
                    proc.wait()
                    break
                time.sleep(0.1)
            take(read_records(channel, key.encode(), offset)[0])  # records written just before exit
            _kill_tree_of(proc)  # threads, children or sandboxes the suite left running
            text = log.text()
        self.logs.append(f"===== {mode} pass, attempt {attempt + 1} (exit {proc.returncode}) =====\n{text}")
        if lingered:
            self.result.notes.append("the suite's process did not exit after its last test "
                                     "(threads left running?): killed")
        if finished and not killed_for:
            return True, False
        if restart_for is not None and not killed_for:
            self.result.notes.append(f"restarted after: {restart_for}")
            return False, True
        if not self.order:
            self.result.error = NOT_COLLECTED + _last_lines(text)
            return True, False
        reason = crash_reason(proc.returncode, text, killed_for)
        victim = current if current in self.tests and current not in self.done else None
        if victim is None:
            victim = next((n for n in self.order if n not in self.done and _in(self.tests[n], tiers)), None)
        if victim is not None:
            t = self.tests[victim]
            t.status, t.score, t.reason = "failed", 0.0, reason
            self.done.add(victim)
        self.result.error = reason
        return False, False

    def run(self) -> AssignmentResult:
        _become_subreaper()
        ours = children()
        t0 = time.time()
        if config.inprocess_tiers(self.name) >= {"correctness", "gpu", "speed"}:
            self._collected(collect(self.name, self.keyword), trusted=True)  # the list, from a trusted process
        for mode, tiers in passes(self.name, _has_cuda()):
            if mode == "inprocess":
                prepare_baselines(self.name)
            for attempt in range(self.max_restarts + 1):
                remaining = [n for n in self.order if n not in self.done and _in(self.tests[n], tiers)]
                if attempt > 0 and not remaining:
                    break
                finished, restart = self._attempt(mode, tiers, attempt, t0)
                if restart:
                    self.result.restarts += 1
                    continue
                if finished or time.time() - t0 > self.suite_timeout:
                    break
                self.result.restarts += 1
        escaped = _kill_orphans(ours)
        if escaped:
            self.result.notes.append(f"{escaped} process(es) that escaped the suite's process group were killed")
        if self.rejected:
            self.result.notes.append("rejected result records: " + "; ".join(self.rejected[:10]))
        for n in self.order:
            if n not in self.done:
                self.tests[n].reason = f"not run: {self.result.error or 'the suite stopped early'}"
        self.result.tests = [self.tests[n] for n in self.order]
        self.result.duration = round(time.time() - t0, 2)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{self.name}.log").write_text("\n".join(self.logs))
        return self.result


def _in(t: TestResult, tiers: set[str] | None) -> bool:
    return tiers is None or t.tier in tiers


def run_assignment(name: str, impl_root: Path, *, log_dir: Path | None = None,
                   progress: Callable[[str], None] | None = None,
                   per_test_timeout: float | None = None, suite_timeout: float | None = None,
                   keyword: str | None = None, host_memory_gb: float | None = None,
                   protect: list[Path] = ()) -> AssignmentResult:
    """Grade one assignment. `protect`: folders the submission may not touch (the grader's --out)."""
    return AssignmentRun(name, impl_root, log_dir=log_dir, progress=progress, per_test_timeout=per_test_timeout,
                         suite_timeout=suite_timeout, keyword=keyword, host_memory_gb=host_memory_gb,
                         protect=list(protect)).run()


def _kill_orphans(ours: set[int]) -> int:
    """Kill children of this process that it did not have before the suite (reparented orphans)."""
    killed = 0
    for _ in range(3):
        extra = children() - ours
        if not extra:
            break
        for pid in extra:
            kill_tree(pid)
            killed += 1
        time.sleep(0.05)
    return killed


def _kill_tree_of(proc: subprocess.Popen) -> None:
    """The suite's process group, and every process below the suite (its sandboxes)."""
    below = descendants(proc.pid)
    _kill_group(proc)
    for pid in below:
        kill_tree(pid)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400]


NOT_COLLECTED = "the graded suite could not be collected: "  # the grader's environment, never the submission


def collect(name: str, keyword: str | None = None) -> list[dict]:
    """The graded tests of one assignment (nodeid, name, points, tier), without running them, from
    a process that imports no submission code."""
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
        channel = Path(tmp) / "channel.jsonl"
        channel.touch()
        extra = ["--collect-only"] + (["-k", keyword] if keyword else [])
        proc = subprocess.run(_pytest_cmd(SUITES_DIR / name, extra), cwd=tmp,
                              env=_suite_env(REPO_ROOT / "solutions", channel, key), capture_output=True, text=True,
                              timeout=300)
        recs, _, _ = read_records(channel, key.encode())
    for r in recs:
        if r["type"] == "collected":
            return r["tests"]
    raise RuntimeError(f"could not collect the {name} suite: {_last_lines(proc.stdout + proc.stderr)}")
