"""Grading a class: grade-all over a folder of submissions, and the Gradescope autograder zip.

    python -m autograder grade-all SUBMISSIONS_DIR --out DIR [--jobs N] [ASSIGNMENT ...]

Each folder or .zip in SUBMISSIONS_DIR is one student (named by the file's stem), graded by the
ordinary `grade` command in a process of its own. Submission code runs only in that command's
sandboxed worker (autograder/remote/isolation.py), which sees the student's own staged copy and
nothing of DIR, of SUBMISSIONS_DIR or of the other jobs. Around the jobs, grade-all keeps:

* Its own records. DIR/.grade-all/ledger/<student>.json (folders 0700, files 0600) is written by
  this process only, when a job ends: graded or not (and why), the sha256 of the student's
  grade.json at that moment, of the submission, and the assignments and -k graded. A later run
  skips a student only if the record says graded, for the same submission and selection, and
  grade.json still has the recorded hash; anything else (no record, a grade.json that grade-all
  did not record, a changed file, a record that is not a private file of this user) is regraded,
  and the run says why. --fresh regrades everyone.
* The gradebook. DIR/gradebook.csv (one row per student: per-assignment score, total, speed ratios,
  status, isolation) is written from grade.json files that match their records, nothing else.
* Each job to itself. DIR/<student>/ is made afresh by grade-all (mode 0700) before the job starts;
  the job gets a private temporary folder, removed after it, and a sandbox uid of its own
  (AUTOGRADER_SANDBOX_UID: 61000 + its slot, skipping uids that exist here or that another
  grade-all on this machine holds; AUTOGRADER_SANDBOX_UID_BASE moves the base), so one job's fork
  bomb does not use up another's process limit (RLIMIT_NPROC counts per uid) and its worker can
  neither signal another job's nor read its staged copy. When the jobs are done, whatever they
  left running is killed (grade-all is their subreaper) before the gradebook is written.
* The machine shared fairly: each job gets its share of the host-memory limit, and on a GPU machine
  GPUs of its own (CUDA_VISIBLE_DEVICES: one each, or --gpus-per-job N), so no GPU runs two jobs:
  speed is graded as a ratio, which a second job on the same GPU would corrupt. ZeRO's multi-GPU
  tests need 2 GPUs; with one per job they are "not graded here", with --gpus-per-job 2 they run.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import grp
import hashlib
import json
import os
import pwd
import queue
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import REPO_ROOT, config
from .sandbox import descendants, kill_all

STATE_DIR = ".grade-all"            # DIR/.grade-all/: grade-all's own records (0700)
LEDGER_DIR = "ledger"               # DIR/.grade-all/ledger/<student>.json (0600)
UID_ENV = "AUTOGRADER_SANDBOX_UID"  # read by autograder/remote/isolation.py in the job
UID_BASE_ENV = "AUTOGRADER_SANDBOX_UID_BASE"
UID_BASE = 61000
RESERVED = {"gradebook.csv"}        # names in DIR that are not students
MAX_GRADE_JSON = 64 << 20
MAX_RECORD = 1 << 20
_SKIP_DIRS = ("__pycache__", ".git", ".ipynb_checkpoints")  # what the staged copy leaves out too


def submissions(folder: Path) -> dict[str, Path]:
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.stem in RESERVED:
            continue
        if p.is_dir() or (p.suffix == ".zip" and p.is_file()):
            found[p.stem] = p
    return found


def fingerprint(path: Path) -> str:
    """sha256 of what is graded: a zip's bytes, or a folder's files (names, sizes and contents, in
    order, without caches and links, as the staged copy takes them). Past four times the size
    limit only names, sizes and modification times count (the grader refuses such a submission)."""
    h = hashlib.sha256()
    path = Path(path).resolve()
    budget = 4 * int(float(config.limits().get("submission_max_mb", 200)) * 2**20)

    def feed(f) -> None:
        nonlocal budget
        try:
            with open(f, "rb") as fh:
                while budget > 0 and (chunk := fh.read(1 << 20)):
                    h.update(chunk)
                    budget -= len(chunk)
        except OSError as e:
            h.update(f"unreadable: {e.errno}".encode())

    if path.is_file():
        h.update(b"zip\0")
        feed(path)
        h.update(str(path.stat().st_size).encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            f = os.path.join(dirpath, name)
            if name.endswith(".pyc") or os.path.islink(f) or not os.path.isfile(f):
                continue
            st = os.stat(f)
            h.update(f"\0{os.path.relpath(f, path)}\0{st.st_size}\0".encode())
            if budget > 0:
                feed(f)
            else:
                h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def _read_file(path: Path, limit: int, private: bool = False) -> bytes | None:
    """A regular file's bytes (never through a link), or None. `private`: only a file of this user
    that nobody else may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        if private and (st.st_uid != os.geteuid() or st.st_mode & 0o077):
            return None
        return f.read(limit + 1)


def _replace_with_dir(path: Path) -> None:
    """`path` becomes a new empty folder of this user, mode 0700 (whatever was there is removed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)


class Ledger:
    """grade-all's own record of each student (see the module's docstring). Written only by this
    process, atomically; a record that is not a regular, private file of this user is ignored."""

    def __init__(self, out: Path):
        self.dir = out / STATE_DIR / LEDGER_DIR
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        for d in (out / STATE_DIR, self.dir):
            self._private_dir(d)

    def _private_dir(self, d: Path) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        st = os.lstat(d)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return
        self.warnings.append(f"{d} was not a private folder of this user: nothing in it is trusted, "
                             "everyone it recorded is regraded")
        _replace_with_dir(d)

    def _path(self, student: str) -> Path:
        name = student if len(student.encode()) <= 200 else hashlib.sha256(student.encode()).hexdigest()
        return self.dir / f"{name}.json"

    def read(self, student: str) -> dict | None:
        path = self._path(student)
        data = _read_file(path, MAX_RECORD, private=True)
        if data is None:
            if os.path.lexists(path):
                self.warnings.append(f"{path} is not a private file of this user: ignored")
            return None
        try:
            rec = json.loads(data)
        except ValueError:
            return None
        return rec if isinstance(rec, dict) and rec.get("student") == student else None

    def write(self, student: str, rec: dict) -> None:
        rec = dict(rec, student=student)
        with self._lock:
            tmp = self.dir / f".{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(rec, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(student))

    def forget(self, student: str) -> None:
        with self._lock, contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(student))


def verified(out: Path, student: str, rec: dict | None) -> tuple[dict | None, str]:
    """(the student's grade.json, "") when the record says graded and the file still has the hash
    grade-all recorded; otherwise (None, why not)."""
    if rec is None:
        return None, "grade-all has no record of grading it"
    if rec.get("status") != "graded":
        return None, str(rec.get("reason") or "no reason recorded")
    data = _read_file(out / student / "grade.json", MAX_GRADE_JSON)
    if data is None:
        return None, "its grade.json is missing"
    if hashlib.sha256(data).hexdigest() != rec.get("grade_sha256"):
        return None, "its grade.json changed after grade-all recorded it"
    try:
        rep = json.loads(data)
    except ValueError:
        return None, "its grade.json is not JSON"
    return rep, ""


def _why_grade(out: Path, student: str, path: Path, selection: dict, rec: dict | None, fresh: bool) -> tuple[bool, str]:
    """(grade it in this run?, why it is regraded: "" for a student graded for the first time)."""
    if fresh:
        return True, "--fresh"
    if rec is None:
        if os.path.lexists(out / student / "grade.json"):
            return True, "its grade.json was not recorded by grade-all"
        return True, ""
    if rec.get("status") != "graded":
        return True, f"the last run did not grade it ({str(rec.get('reason', ''))[:200]})"
    if rec.get("selection") != selection:
        return True, "it was graded for other assignments or another -k"
    if rec.get("submission_sha256") != fingerprint(path):
        return True, "the submission changed since it was graded"
    rep, why = verified(out, student, rec)
    return (False, "") if rep is not None else (True, why)


def _record(out: Path, student: str, status: str, submission_sha: str, selection: dict, uid: int) -> dict:
    rec = {"status": "not graded", "reason": status.removeprefix("NOT GRADED: "), "submission_sha256": submission_sha,
           "selection": selection, "sandbox_uid": uid, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if status != "graded":
        return rec
    data = _read_file(out / student / "grade.json", MAX_GRADE_JSON)
    try:
        rep = json.loads(data) if data is not None else None
    except ValueError:
        rep = None
    if not isinstance(rep, dict) or not isinstance(rep.get("assignments"), list):
        return dict(rec, reason="the grader wrote no readable grade.json")
    return dict(rec, status="graded", reason="", grade_sha256=hashlib.sha256(data).hexdigest())


# ----------------------------------------------------------------------------- processes

def _become_subreaper() -> None:
    """Orphans of the jobs become children of grade-all, so they can be found and killed."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _kill_orphans(ours: set[int]) -> int:
    """Kill (and reap) this process's children that it did not have before the jobs."""
    from .sandbox import children

    killed = set()
    for _ in range(5):
        extra = children() - ours
        if not extra:
            break
        for pid in extra:
            below = descendants(pid)
            kill_all([pid, *below])
            killed.add(pid)
        time.sleep(0.05)
    for pid in killed:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return len(killed)


def _job_timeout(assignments: list[str]) -> float:
    """A backstop for one job (the runner's own limits apply first): every suite's limit, plus
    collection, baseline preparation and start-up."""
    lim = config.limits()
    return len(assignments or config.assignments()) * (float(lim["suite_timeout_s"]) + 1200) + 600


def _in_use(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def _lock_uid(uid: int) -> int | None:
    """As root, hold uid for this run (a lock file in /run/lock): None if another grade-all holds it."""
    folder = next((d for d in ("/run/lock", "/var/lock") if os.path.isdir(d)), tempfile.gettempdir())
    try:
        fd = os.open(os.path.join(folder, f"autograder-sandbox-uid-{uid}.lock"),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise OSError("not ours")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


@contextlib.contextmanager
def sandbox_uids(n: int):
    """n sandbox uids, one per job slot: from AUTOGRADER_SANDBOX_UID_BASE (61000) up, skipping uids
    and groups that exist on this machine and, as root, uids another grade-all here holds."""
    base = int(os.environ.get(UID_BASE_ENV, UID_BASE))
    uids, fds, uid = [], [], base
    try:
        while len(uids) < n:
            if uid > base + 100_000:
                raise RuntimeError(f"no {n} free sandbox uids from {base} up ({UID_BASE_ENV})")
            if not _in_use(uid):
                fd = _lock_uid(uid) if os.geteuid() == 0 else -1
                if fd is not None:
                    uids.append(uid)
                    fds.append(fd)
            uid += 1
        yield uids
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


# ----------------------------------------------------------------------------- grading

def grade_one(student: str, path: Path, out: Path, assignments: list[str], keyword: str | None,
              memory_gb: float | None = None, gpu: str | None = None, env: dict | None = None,
              seed: int | None = None) -> tuple[str, str]:
    """Grade one student with the ordinary CLI, in a process and session of its own, into
    out/<student>/ (made by the caller); its output goes to grader-output.txt there. `path` may
    also be `solutions` or `assignments` (as --impl takes them); `seed`: the run's seed (`stability`).
    Returns (student, "graded" or "NOT GRADED: why")."""
    dest = out / student
    where = str(path) if str(path) in ("solutions", "assignments") else str(Path(path).resolve())
    cmd = [sys.executable, "-m", "autograder", "grade", *assignments, "--impl", where, "--out",
           str(dest.resolve()), "-q", "--brief"]
    if keyword:
        cmd += ["-k", keyword]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if memory_gb:
        cmd += ["--host-memory-gb", f"{memory_gb:.2f}"]
    full_env = dict(os.environ, **(env or {}), **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}))
    limit, late = _job_timeout(assignments), None
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            late = f"the grader ran past grade-all's {limit:.0f} s limit for one student and was killed"
            kill_all([proc.pid, *descendants(proc.pid)])
            stdout, stderr = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the job's session
    (dest / "grader-output.txt").write_text(stdout + stderr)
    if late:
        return student, f"NOT GRADED: {late}"
    if proc.returncode != 0 or not (dest / "grade.json").exists():
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return student, f"NOT GRADED: {last}"
    return student, "graded"


def gradebook(out: Path, students: list[str], ledger: Ledger | None = None) -> Path:
    """DIR/gradebook.csv from the grade.json files that match grade-all's records (written atomically)."""
    ledger = ledger or Ledger(out)
    names = config.assignments()
    path = out / "gradebook.csv"
    tmp = out / f".gradebook.{secrets.token_hex(6)}.tmp"
    try:
        _write_gradebook(tmp, out, students, ledger, names)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def _write_gradebook(tmp: Path, out: Path, students: list[str], ledger: Ledger, names: list[str]) -> None:
    with open(tmp, "x", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *names, "total", "graded_max", "not_graded_here", "speed_ratios", "status", "isolation"])
        for s in students:
            rep, why = verified(out, s, ledger.read(s))
            try:
                row = _row(s, names, rep) if rep is not None else None
            except (KeyError, TypeError, ValueError, AttributeError):
                row, why = None, "its grade.json is not one the grader writes"
            if row is None:
                status = "not graded" if why == "grade-all has no record of grading it" else f"not graded: {why}"
                row = [s, *[""] * len(names), "", "", "", "", status, ""]
            w.writerow(row)


def _row(s: str, names: list[str], rep: dict) -> list:
    by = {a["name"]: a for a in rep["assignments"]}
    scores, total, gmax, ung, ratios, isolation = [], 0.0, 0.0, 0.0, [], set()
    for n in names:
        a = by.get(n)
        if a is None:
            scores.append("")
            continue
        sc = round(sum(float(t["score"]) for t in a["tests"]), 4)
        scores.append(sc)
        total += sc
        gmax += sum(float(t["max_score"]) for t in a["tests"] if t["status"] != "not_graded")
        ung += sum(float(t["max_score"]) for t in a["tests"] if t["status"] == "not_graded")
        ratios += [f"{t['nodeid'].split('::')[-1]}={float(t['extra']['ratio']):.3f}" for t in a["tests"]
                   if "ratio" in (t.get("extra") or {})]
        isolation |= {str(v) for v in (a.get("isolation") or {}).values()}
    return [s, *scores, round(total, 4), gmax, ung, " ".join(ratios), "graded", "; ".join(sorted(isolation))]


def grade_all(folder: Path, out: Path, assignments: list[str], jobs: int, fresh: bool, keyword: str | None,
              gpus_per_job: int = 1) -> int:
    folder, out = Path(folder).resolve(), Path(out).resolve()  # the jobs run in the repository
    subs = submissions(folder)
    if not subs:
        print(f"no submissions (folders or .zip files) in {folder}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    selection = {"assignments": sorted(assignments or config.assignments()), "keyword": keyword}
    todo, regrades = {}, []
    for s, p in subs.items():
        must, why = _why_grade(out, s, p, selection, ledger.read(s), fresh)
        if must:
            todo[s] = p
            if why and why != "--fresh":
                regrades.append(f"  regrading {s}: {why}")
    for w in ledger.warnings:
        print(f"warning: {w}")
    jobs = max(1, min(jobs, len(todo) or 1))
    gpus = gpu_slots(visible_gpus(), gpus_per_job)
    if gpus and jobs > len(gpus):
        print(f"{len(gpus)} GPU slot(s) of {gpus_per_job}: grading {len(gpus)} at a time, not {jobs} (a speed grade "
              "needs its GPUs to itself)")
        jobs = len(gpus)
    from .runner import host_memory_limit

    memory_gb = host_memory_limit() / 2**30 / jobs
    print(f"{len(subs)} submissions, {len(subs) - len(todo)} already graded, {len(todo)} to grade with {jobs} at a time"
          f" ({memory_gb:.1f} GB of RAM each{f', GPUs {gpus_per_job} each' if gpus else ''})")
    for line in regrades:
        print(line)
    if todo:
        _grade_jobs(todo, out, ledger, assignments, keyword, selection, jobs, gpus, memory_gb, folder)
    book = gradebook(out, list(subs), ledger)
    print(f"gradebook: {book}")
    return 0


def _to_hide(folder: Path, out: Path, todo: dict[str, Path]) -> list[str]:
    """Folders the namespaces level hides from each job's worker (AUTOGRADER_HIDE; bubblewrap shows
    them anyway): the class's submissions (also where links in the folder lead), the output folder;
    never one that holds what the worker needs (Python, the repository, the temporary folders)."""
    need = [Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent, REPO_ROOT.resolve(),
            Path(tempfile.gettempdir()).resolve()]
    wanted = {folder.resolve(), out.resolve(), *(p.resolve().parent for p in todo.values())}
    return sorted(str(p) for p in wanted if not any(n == p or p in n.parents for n in need))


def _grade_jobs(todo: dict[str, Path], out: Path, ledger: Ledger, assignments: list[str], keyword: str | None,
                selection: dict, jobs: int, gpus: list[str], memory_gb: float, folder: Path) -> None:
    from .remote.isolation import choose
    from .sandbox import children

    iso = choose()
    hide = os.pathsep.join(p for p in [os.environ.get("AUTOGRADER_HIDE", ""), *_to_hide(folder, out, todo)] if p)
    _become_subreaper()
    ours = children()
    job_root = Path(tempfile.mkdtemp(prefix="autograder-grade-all-"))
    os.chmod(job_root, 0o711)  # each job's folder in it: traversable, not listable, by the sandboxes
    try:
        with sandbox_uids(jobs) as uids:
            print(f"submission code runs in: {iso.describe()}; sandbox uid "
                  + (f"{uids[0]}" if jobs == 1 else f"{uids[0]}..{uids[-1]}, one per job")
                  + ("" if os.geteuid() == 0 else " (not root: every sandbox runs as your own uid, which the"
                     " jobs' process limit then counts together)"))
            if iso.level != "bubblewrap":
                print(f"warning: without bubblewrap the jobs are walled off less: {iso.why}. "
                      + ("At the namespaces level a sandbox still sees the host's files that its uid may read."
                         if iso.level == "namespaces" else
                         "At the process level submission code runs as this user and can reach the other jobs, "
                         "the submissions, DIR and grade-all itself (the records' hashes still catch a changed "
                         "grade.json): install bubblewrap."))
            def job(item: tuple[str, Path], uid: int, gpu: str | None) -> tuple[str, str]:
                student, path = item
                tmp = None
                try:
                    ledger.forget(student)
                    _replace_with_dir(out / student)
                    tmp = Path(tempfile.mkdtemp(prefix="job-", dir=job_root))
                    os.chmod(tmp, 0o711)
                    sha = fingerprint(path)  # what is graded is what is recorded; a later change is regraded
                    env = {UID_ENV: str(uid), "TMPDIR": str(tmp), "AUTOGRADER_HIDE": hide}
                    student, status = grade_one(student, path, out, assignments, keyword, memory_gb, gpu, env=env)
                    ledger.write(student, _record(out, student, status, sha, selection, uid))
                    return student, status
                except Exception as e:  # noqa: BLE001 - one student's trouble never stops the class
                    status = f"NOT GRADED: grade-all could not grade it: {type(e).__name__}: {e}"
                    with contextlib.suppress(Exception):
                        ledger.write(student, _record(out, student, status, "", selection, uid))
                    return student, status
                finally:
                    if tmp is not None:
                        shutil.rmtree(tmp, ignore_errors=True)

            for student, status in map_in_slots(job, todo.items(), uids, gpus):
                print(f"  {student}: {status}", flush=True)
    finally:
        left = _kill_orphans(ours)
        if left:
            print(f"killed {left} process(es) the jobs left running")
        shutil.rmtree(job_root, ignore_errors=True)


def map_in_slots(fn, items, uids: list[int], gpus: list[str]):
    """fn(item, uid, gpu) for every item, len(uids) at a time, each call holding a slot of its own
    while it runs: a sandbox uid and (on a GPU machine) a GPU set, so no two jobs share either.
    Yields the results in the order of items, each as soon as it and those before it are done."""
    free: queue.Queue = queue.Queue()
    for slot in zip(uids, gpus or [None] * len(uids)):
        free.put(slot)

    def run(item):
        uid, gpu = free.get()
        try:
            return fn(item, uid, gpu)
        finally:
            free.put((uid, gpu))

    with ThreadPoolExecutor(max_workers=len(uids)) as pool:
        yield from pool.map(run, items)


def gpu_slots(gpus: list[str], per_job: int) -> list[str]:
    """The GPUs in groups of per_job, as CUDA_VISIBLE_DEVICES values ("0,1", "2,3"): a job's
    tests see only its own. One GPU each by default; ZeRO's multi-GPU tests need 2 (with fewer
    they are "not graded here"), so a class graded for them runs with --gpus-per-job 2."""
    per_job = max(1, per_job)
    if gpus and len(gpus) < per_job:
        print(f"warning: --gpus-per-job {per_job} but this machine has {len(gpus)} GPU(s): one job at a time, "
              "with all of them")
        return [",".join(gpus)]
    return [",".join(gpus[i:i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)]


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use, as CUDA_VISIBLE_DEVICES entries ([] without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if r.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(r.stdout.splitlines()) if line.startswith("GPU ")]


# ----------------------------------------------------------------------------- Gradescope

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when building the autograder image.
set -euo pipefail
cd /autograder/source
apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null || true
# bubblewrap: the sandbox that runs submission code (docs/grading.md). Without it, or where the
# image cannot make namespaces, the grader falls back to a weaker isolation and says so in grade.json.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null \\
  || echo "warning: could not install bubblewrap: submission code will run with weaker isolation"
python3 -m pip install -q --upgrade pip
# The versions grading was checked with (requirements.lock, as `make setup` installs them): torch
# at the lock's pin unless TORCH_SPEC says otherwise, everything else constrained by the lock.
grep -Ev '^(torch|triton)==' requirements.lock > /tmp/llmsys-constraints.txt
TORCH_PIN=$(grep -m1 '^torch==' requirements.lock || echo torch)
TRITON_PIN=$(grep -m1 '^triton==' requirements.lock || echo triton)
python3 -c "import torch" 2>/dev/null \\
  || python3 -m pip install -q -c /tmp/llmsys-constraints.txt "${TORCH_SPEC:-$TORCH_PIN}"
# Triton's interpreter runs the paged-attention kernels on the CPU: the lock's triton where torch
# brought none (a CPU wheel); a CUDA torch's own triton is kept, as it matches that torch.
python3 -c "import triton" 2>/dev/null || python3 -m pip install -q -c /tmp/llmsys-constraints.txt "$TRITON_PIN"
# deepspeed: zero's comparison with real DeepSpeed (CPU, gloo) is graded, not skipped
python3 -m pip install -q -c /tmp/llmsys-constraints.txt -e ".[deepspeed]"
python3 -c "from autograder.remote.isolation import choose
print('submission code will run in:', choose().describe())" || true
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; results.json must land in /autograder/results/.
cd /autograder/source
python3 -m autograder grade {assignments} --impl /autograder/submission --out /autograder/results -q --brief
test -s /autograder/results/results.json \\
  || echo '{{"score": 0, "output": "the grader could not run; contact the course staff"}}' \\
     > /autograder/results/results.json
"""


def gradescope_zip(out: Path, assignments: list[str]) -> Path:
    """autograder.zip for Gradescope: setup.sh, run_autograder, the grader and the course library
    (llmsys/), without solutions/."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for item in ("autograder", "llmsys", "data", "pyproject.toml", "README.md", "requirements.lock"):
            src = REPO_ROOT / item
            if src.is_dir():
                shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
            else:
                shutil.copy(src, root / item)
        (root / "setup.sh").write_text(SETUP_SH)
        (root / "run_autograder").write_text(RUN_AUTOGRADER.format(assignments=" ".join(assignments)))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    info = zipfile.ZipInfo.from_file(f, f.relative_to(root).as_posix())
                    if f.name in ("setup.sh", "run_autograder"):
                        info.external_attr = 0o755 << 16
                    zf.writestr(info, f.read_bytes())
    return out
