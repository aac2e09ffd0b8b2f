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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from . import REPO_ROOT, SUITES_DIR, config
from .impl import ENV_VAR as IMPL_ENV
from .pytest_plugin import CHANNEL_ENV, KEY_ENV
from .sandbox import PROTECT_ENV, children, kill_tree, proc_stats
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

    def text(self) -> str:
        self.thread.join(timeout=5)
        mid = f"\n[... {self.dropped} bytes of output dropped ...]\n" if self.dropped else ""
        return (bytes(self.head).decode(errors="replace") + mid + bytes(self.tail).decode(errors="replace"))


def read_records(path: Path, key: bytes, offset: int = 0) -> tuple[list[dict], int, int]:
    """Signed records from the channel file after `offset`: (records, new offset, rejected)."""
    good, bad = [], 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # only whole lines
    for line in data[:end].splitlines():
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


def _suite_env(impl_root: Path, channel: Path, key: str, protect: list[Path] = ()) -> dict:
    env = dict(os.environ)
    env[IMPL_ENV] = str(impl_root)
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


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in a process group, from /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(st.rss_pages * page for st in proc_stats() if st.pgrp == pgid)


def _become_subreaper() -> None:
    """Orphans of the suite (a double fork that escapes its process group) become our children,
    so they can be found and killed. Linux only; elsewhere the process group kill must do."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001
        pass


def run_assignment(name: str, impl_root: Path, *, log_dir: Path | None = None,
                   progress: Callable[[str], None] | None = None,
                   per_test_timeout: float | None = None, suite_timeout: float | None = None,
                   keyword: str | None = None, host_memory_gb: float | None = None,
                   protect: list[Path] = ()) -> AssignmentResult:
    """Grade one assignment. `protect`: folders the submission may not touch (the grader's --out)."""
    lim = config.limits()
    per_test_timeout = per_test_timeout or float(lim["per_test_timeout_s"])
    suite_timeout = suite_timeout or float(lim["suite_timeout_s"])
    mem_limit = host_memory_gb * 2**30 if host_memory_gb else host_memory_limit()
    exit_grace = float(lim.get("exit_grace_s", 10))
    _become_subreaper()
    ours = children()  # processes of ours that existed before the suite: never killed
    suite = SUITES_DIR / name
    result = AssignmentResult(name=name, title=config.title(name))
    say = progress or (lambda s: None)
    t0 = time.time()
    tests: dict[str, TestResult] = {}
    order: list[str] = []
    done: set[str] = set()
    logs: list[str] = []
    extra_args = ["-k", keyword] if keyword else []

    for attempt in range(int(lim["max_restarts"]) + 1):
        remaining = [n for n in order if n not in done]
        if attempt > 0 and not remaining:
            break
        deselect = [a for n in done for a in ("--deselect", n)]
        key = secrets.token_hex(16)
        with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
            channel = Path(tmp) / "channel.jsonl"
            channel.touch()
            proc = subprocess.Popen(_pytest_cmd(suite, extra_args + deselect), cwd=tmp,
                                    env=_suite_env(impl_root, channel, key, [*protect, *([log_dir] if log_dir else [])]),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            log = CappedLog(proc.stdout, int(lim["log_head_bytes"]), int(lim["log_tail_bytes"]))
            offset, current, started, killed_for, finished = 0, None, time.time(), None, False
            restart_for, done_at, lingered, next_rss = None, None, False, 0.0

            def take(recs: list[dict]) -> None:
                """Apply the suite's records, while it runs and once more after it exits."""
                nonlocal current, started, finished, done_at, restart_for
                for r in recs:
                    if r["type"] == "collected":
                        for t in r["tests"]:
                            if t["nodeid"] not in tests:
                                tests[t["nodeid"]] = TestResult(assignment=name, nodeid=t["nodeid"], name=t["name"],
                                                                tier=t["tier"], max_score=t["points"])
                                order.append(t["nodeid"])
                    elif r["type"] == "start":
                        current, started = r["nodeid"], time.time()
                        say(f"[{name}] {len(done) + 1}/{len(order)} {current.split('::')[-1]}")
                    elif r["type"] == "result" and r["nodeid"] in tests:
                        t = tests[r["nodeid"]]
                        t.status, t.score, t.reason = r["status"], float(r["score"]), r["reason"]
                        t.duration, t.extra = r["duration"], r.get("extra", {})
                        t.score = min(max(t.score, 0.0), t.max_score)  # the grader, not the suite, bounds scores
                        done.add(r["nodeid"])
                        current = None if current == r["nodeid"] else current
                    elif r["type"] == "done":
                        finished, done_at = True, time.time()
                    elif r["type"] == "restart":
                        restart_for = r["reason"]

            while True:
                rc = proc.poll()
                recs, offset, bad = read_records(channel, key.encode(), offset)
                if bad:
                    result.error = f"{bad} forged or corrupt result record(s) rejected"
                take(recs)
                if rc is not None:
                    break
                now = time.time()
                if finished and now - done_at > exit_grace:
                    lingered = True  # every result is in; what keeps the process alive is not graded
                    _kill_group(proc)
                    proc.wait()
                    break
                if now >= next_rss:
                    next_rss = now + 0.5
                    rss = group_rss(proc.pid)
                    if rss > mem_limit:
                        killed_for = (f"host out of memory: the test used {rss / 2**30:.1f} GB of RAM, over the "
                                      f"{mem_limit / 2**30:.1f} GB limit (host_memory_gb in autograder/grading.toml)")
                if killed_for is None and current is not None and now - started > per_test_timeout:
                    killed_for = f"timed out after {per_test_timeout:.0f} s (infinite loop or deadlock?)"
                elif killed_for is None and now - t0 > suite_timeout:
                    killed_for = f"the assignment's suite ran past its {suite_timeout:.0f} s limit"
                if killed_for:
                    _kill_group(proc)
                    proc.wait()
                    break
                time.sleep(0.1)
            take(read_records(channel, key.encode(), offset)[0])  # records written just before exit
            _kill_group(proc)  # threads or children the suite left running
            escaped = _kill_orphans(ours)
            text = log.text()
            logs.append(f"===== attempt {attempt + 1} (exit {proc.returncode}) =====\n{text}")
            if lingered:
                result.notes.append("the suite's process did not exit after its last test (threads left running?): killed")
            if escaped:
                result.notes.append(f"{escaped} process(es) that escaped the suite's process group were killed")
            if finished and not killed_for:
                break
            if restart_for is not None and not killed_for:
                # the plugin charged the test that broke the GPU and stopped: go on in a fresh process
                result.notes.append(f"restarted after: {restart_for}")
                result.restarts = attempt + 1
                continue
            if not order:
                result.error = "the graded suite could not be collected: " + _last_lines(text)
                break
            reason = crash_reason(proc.returncode, text, killed_for)
            victim = current or next((n for n in order if n not in done), None)
            if victim is not None:
                tests[victim].status, tests[victim].score, tests[victim].reason = "failed", 0.0, reason
                done.add(victim)
            result.error = reason
            result.restarts = attempt + 1
            if time.time() - t0 > suite_timeout:
                break
    for n in order:
        if n not in done:
            tests[n].reason = f"not run: {result.error or 'the suite stopped early'}"
    result.tests = [tests[n] for n in order]
    result.duration = round(time.time() - t0, 2)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{name}.log").write_text("\n".join(logs))
    return result


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


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400]


def collect(name: str) -> list[dict]:
    """The graded tests of one assignment (nodeid, name, points, tier), without running them."""
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="autograder-") as tmp:
        channel = Path(tmp) / "channel.jsonl"
        channel.touch()
        proc = subprocess.run(_pytest_cmd(SUITES_DIR / name, ["--collect-only"]), cwd=tmp,
                              env=_suite_env(REPO_ROOT / "solutions", channel, key), capture_output=True, text=True,
                              timeout=300)
        recs, _, _ = read_records(channel, key.encode())
    for r in recs:
        if r["type"] == "collected":
            return r["tests"]
    raise RuntimeError(f"could not collect the {name} suite: {_last_lines(proc.stdout + proc.stderr)}")
