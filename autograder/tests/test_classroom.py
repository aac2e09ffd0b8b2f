"""grade-all over a class folder (resumable from its own records, gradebook.csv, jobs that cannot
reach each other) and the Gradescope zip.

The attack tests run real grade-all jobs on one or a few fast kv_cache tests; each attacker is the
released stubs plus the attack in kv_cache_bytes (the function `-k bytes_real` calls), and knows
every path of the class (the submissions, the output folder) as a student who read the docs could
guess them. Each attack reports what it found in its test's failure reason, so the test can check
that it ran and reached nothing."""
import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from autograder import REPO_ROOT

# The two stubs as release writes them (wrapped to 120 columns: autograder/release.py)
STUB_BYTES = ('    raise NotImplementedError(\n'
              '        "kv_cache: kv_cache_bytes (kv_cache/kv_cache.py): 2 (K and V) x layers x batch x seq_len '
              'x kv heads x head_dim "\n'
              '        "x bytes per element")\n')
STUB_REPEAT = ('    raise NotImplementedError(\n'
               '        "kv_cache: repeat_kv (kv_cache/attention.py): each KV head is repeated n_rep times in a row '
               '(repeat_interleave "\n'
               '        "on dim 1, or expand + reshape)")\n')


def build(dest: Path, base: str, attack: str | None = None, repeat_kv: str | None = None) -> Path:
    """A submission folder: solutions/ or assignments/ (stubs), with `attack` (a function body,
    4-space indented) in place of the stub of kv_cache_bytes, `repeat_kv` in place of repeat_kv's."""
    shutil.copytree(REPO_ROOT / base, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "notebooks"))
    for rel, stub, body in [("kv_cache/kv_cache.py", STUB_BYTES, attack),
                            ("kv_cache/attention.py", STUB_REPEAT, repeat_kv)]:
        if body is not None:
            text = (dest / rel).read_text()
            assert stub in text, f"the stub in {rel} changed: update the test's copy of it"
            (dest / rel).write_text(text.replace(stub, body))
    return dest


def grade_all(subs: Path, out: Path, *args: str, assignments=("kv_cache",), env: dict | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autograder", "grade-all", str(subs), *assignments, "--out", str(out), *args]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def book(out: Path) -> dict[str, dict]:
    return {row["student"]: row for row in csv.DictReader(open(out / "gradebook.csv"))}


def reasons(out: Path, student: str) -> str:
    rep = json.loads((out / student / "grade.json").read_text())
    return " | ".join(t["reason"] for a in rep["assignments"] for t in a["tests"])


def record(out: Path, student: str) -> dict:
    return json.loads((out / ".grade-all" / "ledger" / f"{student}.json").read_text())


# ----------------------------------------------------------------------------- resume and records

def test_grade_all_writes_a_gradebook_and_resumes_trusting_only_its_own_records(tmp_path):
    """(c) Resume skips only students whose grade.json grade-all recorded (and that still has the
    recorded hash); forged grade.json files and a forged record are regraded, and the run says so."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    build(subs / "alice", "solutions")
    shutil.make_archive(str(subs / "bob"), "zip", REPO_ROOT / "assignments")
    (subs / "notes.txt").write_text("not a submission")
    args = ["--jobs", "2", "-k", "bytes_real or repeat_kv"]
    two = {"assignments": ("kv_cache",)}
    first = grade_all(subs, out, *args, **two)
    rows = book(out)
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["kv_cache"] == "4.0" and rows["alice"]["block_manager"] == ""
    assert rows["alice"]["total"] == "4.0"
    assert rows["bob"]["total"] == "0.0" and rows["bob"]["status"] == "graded"
    assert "bubblewrap" in rows["alice"]["isolation"] or "submission code runs in: bubblewrap" not in first.stdout
    assert (out / "alice" / "results.json").exists()
    # grade-all's own records, private, with the hash of what it recorded
    ledger = out / ".grade-all" / "ledger"
    for p in (out / ".grade-all", ledger, out / "alice", out / "bob"):
        assert stat.S_IMODE(os.lstat(p).st_mode) == 0o700, p
    assert stat.S_IMODE(os.lstat(ledger / "alice.json").st_mode) == 0o600
    assert record(out, "alice")["status"] == "graded" and len(record(out, "alice")["grade_sha256"]) == 64
    assert record(out, "alice")["sandbox_uid"] != record(out, "bob")["sandbox_uid"], "each job has its own sandbox uid"

    again = grade_all(subs, out, *args, **two)
    assert "2 already graded, 0 to grade" in again.stdout, again.stdout

    # forgeries: bob's grade.json replaced by a full-marks one; carol (new) arrives with a
    # full-marks grade.json already in place and a record that grade-all did not write
    full = (out / "alice" / "grade.json").read_text()
    (out / "bob" / "grade.json").write_text(full)
    build(subs / "carol", "assignments")
    (out / "carol").mkdir()
    (out / "carol" / "grade.json").write_text(full)
    forged = dict(record(out, "alice"), student="carol")
    forged["submission_sha256"] = __import__("autograder.classroom", fromlist=["x"]).fingerprint(subs / "carol")
    (ledger / "carol.json").write_text(json.dumps(forged))
    if os.geteuid() == 0:
        os.chmod(ledger / "carol.json", 0o600)
        os.chown(ledger / "carol.json", 65534, 65534)  # another user's file, however private
    else:
        os.chmod(ledger / "carol.json", 0o644)
    third = grade_all(subs, out, *args, **two)
    assert "1 already graded, 2 to grade" in third.stdout, third.stdout
    assert "regrading bob: its grade.json changed after grade-all recorded it" in third.stdout, third.stdout
    assert "regrading carol: its grade.json was not recorded by grade-all" in third.stdout, third.stdout
    assert "carol.json is not a private file of this user" in third.stdout, third.stdout
    rows = book(out)
    assert rows["alice"]["total"] == "4.0"
    assert rows["bob"]["total"] == "0.0" and rows["carol"]["total"] == "0.0", rows
    assert rows["bob"]["status"] == rows["carol"]["status"] == "graded"

    # a grade.json changed after the run is not in the gradebook, and the next run regrades it
    (out / "bob" / "grade.json").write_text(full)
    from autograder.classroom import gradebook

    gradebook(out, ["alice", "bob", "carol"])
    assert book(out)["bob"]["status"] == "not graded: its grade.json changed after grade-all recorded it"
    assert book(out)["bob"]["total"] == ""


# ----------------------------------------------------------------------------- jobs cannot reach each other

def test_a_submission_cannot_read_or_overwrite_a_classmate(tmp_path):
    """(a) The attacker, graded after alice, looks for alice's submission, her finished results,
    grade-all's records and the staged copies, would run alice's code if it found it, and tries to
    overwrite alice's grade.json and the gradebook. It finds nothing; alice keeps full marks."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    build(subs / "alice", "solutions")
    forged = json.dumps({"impl": "forged", "assignments": [{"name": "kv_cache", "tests": []}]})
    attack = f"""    import glob, os
    seen, wrote = [], []
    for pattern in [{str(subs / 'alice')!r} + '/**', {str(out / 'alice')!r} + '/**',
                    {str(out / '.grade-all')!r} + '/**',
                    '/tmp/autograder-*/**', {os.environ.get('TMPDIR', '/tmp')!r} + '/autograder-*/**']:
        seen += [p for p in glob.glob(pattern, recursive=True)
                 if os.path.exists(p) and ('alice' in p or 'grade-all' in p)]
    for p in seen:
        if p.endswith('kv_cache/kv_cache.py'):  # run the classmate's code instead of ours
            ns = {{}}
            exec(open(p).read(), ns)
            return ns['kv_cache_bytes'](config, batch_size, seq_len, dtype)
    for target in [{str(out / 'alice' / 'grade.json')!r}, {str(out / 'gradebook.csv')!r},
                   {str(out / '.grade-all' / 'ledger' / 'alice.json')!r}]:
        try:
            with open(target, 'w') as f:
                f.write({forged!r})
            wrote.append(target)
        except OSError:
            pass
    raise AssertionError(f"ATTACK uid={{os.getuid()}} seen={{seen}} wrote={{wrote}}")
"""
    build(subs / "mallory", "assignments", attack)
    grade_all(subs, out, "--jobs", "1", "-k", "bytes_real")  # alice first, then mallory
    rows = book(out)
    assert rows["alice"]["total"] == "1.0" and rows["alice"]["status"] == "graded", rows["alice"]
    assert rows["mallory"]["total"] == "0.0" and rows["mallory"]["status"] == "graded", rows["mallory"]
    why = reasons(out, "mallory")
    assert "ATTACK uid=" in why and "seen=[] wrote=[]" in why, why
    assert json.loads((out / "alice" / "grade.json").read_text())["impl"] != "forged"


def test_a_submission_that_kills_everything_it_can_reaches_only_its_own_sandbox(tmp_path):
    """(b) While an honest classmate is graded next to it, the attacker SIGKILLs every pid it finds
    in /proc (sparing itself and its ancestors, so it can report what it saw) and then, for 5 s,
    sends SIGKILL to -1: the classmate keeps full marks and grade-all finishes. The attacker sees
    only its own sandbox's few processes, and runs as a sandbox uid of its own."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    build(subs / "honest", "solutions")
    scan = """    import os, signal, time
    me, mine, seen = os.getpid(), set(), set()
    p = me
    while p > 1:  # ancestors: killing them would end this worker before it reports
        mine.add(p)
        p = int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1])
    end = time.time() + 3
    while time.time() < end:
        for d in os.listdir('/proc'):
            if d.isdigit() and int(d) not in mine:
                seen.add(int(d))
                try:
                    os.kill(int(d), signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.02)
    raise AssertionError(f"KILLER uid={os.getuid()} saw pids {sorted(seen | mine)}")
"""
    kill_all = """    import os, signal, time
    end = time.time() + 5
    while time.time() < end:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("KILLER survived")
"""
    build(subs / "killer", "assignments", kill_all, repeat_kv=scan)
    r = grade_all(subs, out, "--jobs", "2", "-k", "bytes_real or repeat_kv")
    rows = book(out)
    assert rows["honest"]["total"] == "4.0" and rows["honest"]["status"] == "graded", (rows["honest"], r.stdout)
    assert rows["killer"]["total"] == "0.0" and rows["killer"]["status"] == "graded", rows["killer"]
    uid = record(out, "killer")["sandbox_uid"]
    assert uid != record(out, "honest")["sandbox_uid"]
    why = reasons(out, "killer")
    assert "KILLER" in why, why
    if os.geteuid() == 0 and "bubblewrap" in rows["killer"]["isolation"]:
        import re

        seen = [eval(m) for m in re.findall(r"KILLER uid=%d saw pids (\[[0-9, ]*\])" % uid, why)]
        assert seen and all(len(pids) < 10 for pids in seen), why  # its own PID namespace: a handful


def test_a_process_left_in_a_new_session_dies_with_the_job(tmp_path):
    """(e) The submission starts a daemon (new session, double fork, signals ignored) that keeps
    trying to rewrite gradebook.csv and its own grade.json: after grade-all returns nothing of it
    is alive, and the gradebook stays as grade-all wrote it."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    marker = f"DAEMON-{tmp_path.name}-{os.getpid()}"
    fake = "student,total\\nmallory,999\\n"
    daemon = (f"# {marker}\n"
              "import os, signal, time\n"
              "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT): signal.signal(s, signal.SIG_IGN)\n"
              "if os.fork(): os._exit(0)\n"
              "os.setsid()\n"
              "if os.fork(): os._exit(0)\n"
              "end = time.time() + 60\n"
              "while time.time() < end:\n"
              "    time.sleep(0.2)\n"
              f"    for p in [{str(out / 'gradebook.csv')!r}, {str(out / 'mallory' / 'grade.json')!r}]:\n"
              "        try:\n"
              f"            open(p, 'w').write({fake!r})\n"
              "        except OSError:\n"
              "            pass\n")
    attack = f"""    import subprocess, sys
    p = subprocess.Popen([sys.executable, '-c', {daemon!r}], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait()
    raise AssertionError('DAEMON started')
"""
    build(subs / "mallory", "assignments", attack)
    grade_all(subs, out, "--jobs", "1", "-k", "bytes_real")
    assert "DAEMON started" in reasons(out, "mallory")
    before = (out / "gradebook.csv").read_bytes()
    grade = (out / "mallory" / "grade.json").read_bytes()
    assert b"mallory,0.0" in before

    def alive() -> list[int]:
        found = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    found.append(int(d))
            except OSError:
                pass
        return found

    assert alive() == [], "a process of the submission outlived grade-all"
    time.sleep(4)
    assert alive() == []
    assert (out / "gradebook.csv").read_bytes() == before
    assert (out / "mallory" / "grade.json").read_bytes() == grade


def test_memory_held_in_the_sandbox_s_tmpfs_counts_against_the_job_s_share(tmp_path):
    """A job's memory share (grade-all gives each job host_memory / jobs) must cover what its
    submission holds in the sandbox's tmpfs too, or one job can take the memory of the others."""
    hog = """    import os, time
    chunk = b"x" * (1 << 20)
    for where in ("/dev/shm/hog", "/tmp/hog"):
        with open(where, "wb") as f:
            for _ in range(700):
                f.write(chunk)
    time.sleep(4)
    raise AssertionError("HOG held 1.4 GB in tmpfs for 4 s")
"""
    sub = build(tmp_path / "hog", "assignments", hog)
    r = subprocess.run([sys.executable, "-m", "autograder", "grade", "kv_cache", "--impl", str(sub), "--out",
                        str(tmp_path / "out"), "-q", "--brief", "-k", "bytes_real", "--host-memory-gb", "1"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    why = reasons(tmp_path, "out")
    assert "HOG held" not in why, why


# ----------------------------------------------------------------------------- zips

def _bomb(path: Path, mb: int) -> Path:
    """A zip of one member of `mb` MB of zeros, deflated (a few hundred KB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("kv_cache/__init__.py", "")
        with zf.open("kv_cache/zeros.bin", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(mb):
                f.write(chunk)
    return path


def _many(path: Path, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"kv_cache/f{i}.py", "")
    return path


def _liar(path: Path, mb: int, claims: int) -> Path:
    """A bomb whose central directory says its member holds `claims` bytes."""
    _bomb(path, mb)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("kv_cache/zeros.bin")
    cd = data.find(b"PK\x01\x02")
    while True:  # the central directory entry of zeros.bin
        name_len = int.from_bytes(data[cd + 28:cd + 30], "little")
        if data[cd + 46:cd + 46 + name_len] == b"kv_cache/zeros.bin":
            break
        cd = data.find(b"PK\x01\x02", cd + 4)
    extra_len = int.from_bytes(data[cd + 30:cd + 32], "little")
    extra = cd + 46 + name_len
    if int.from_bytes(data[cd + 24:cd + 28], "little") == 0xFFFFFFFF:  # zip64: sizes in the extra field
        i = extra
        while i < extra + extra_len:
            tag, size = int.from_bytes(data[i:i + 2], "little"), int.from_bytes(data[i + 2:i + 4], "little")
            if tag == 1:
                data[i + 4:i + 12] = claims.to_bytes(8, "little")  # uncompressed size comes first
                break
            i += 4 + size
    else:
        data[cd + 24:cd + 28] = claims.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("kv_cache/zeros.bin").file_size == claims and info.file_size == mb << 20
    return path


def test_zip_limits_are_checked_before_extraction(tmp_path, monkeypatch):
    """(d) in process, with the limits lowered: a bomb and a zip of too many members are refused
    before anything is extracted, and the staged folder is gone."""
    from autograder import impl

    monkeypatch.setattr(impl, "limits", lambda: (50, 1 << 20))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def no_extraction(*a, **k):
        raise AssertionError("extracted before the limits were checked")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extraction)
    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extraction)
    for z, why in [(_bomb(tmp_path / "bomb.zip", 3), "MB uncompressed, more than the 1 MB allowed"),
                   (_many(tmp_path / "many.zip", 51), "51 members, more than the 50 allowed")]:
        with pytest.raises(ValueError, match=why):
            with impl.staged(z):
                pass
        assert os.listdir(tmp_path / "tmp") == []


def test_grade_all_refuses_zip_bombs_with_the_reason_and_leaves_nothing_behind(tmp_path):
    """(d) end to end, at the real limits (200 MB, 5000 files): a 300 MB bomb, 5001 members, and
    a bomb whose directory lies about its size are not graded, the gradebook says why, and the
    temporary folder is empty afterwards (grade-all's, and the grade command's on its own)."""
    subs, out, tmp = tmp_path / "subs", tmp_path / "out", tmp_path / "tmp"
    subs.mkdir()
    tmp.mkdir()
    _bomb(subs / "bomb.zip", 300)
    _many(subs / "many.zip", 5001)
    _liar(subs / "liar.zip", 300, claims=1000)
    r = grade_all(subs, out, "--jobs", "2", "-k", "bytes_real", env={"TMPDIR": str(tmp)})
    rows = book(out)
    assert rows["bomb"]["status"].startswith("not graded: ") and "300 MB uncompressed, more than the 200 MB allowed" \
        in rows["bomb"]["status"], rows["bomb"]
    assert "5001 members, more than the 5000 allowed" in rows["many"]["status"], rows["many"]
    assert rows["liar"]["status"].startswith("not graded: ") and "CRC" in rows["liar"]["status"], rows["liar"]
    assert "bomb: NOT GRADED" in r.stdout
    assert os.listdir(tmp) == [], os.listdir(tmp)
    for name in ("bomb", "many", "liar"):
        g = subprocess.run([sys.executable, "-m", "autograder", "grade", "kv_cache",
                            "--impl", str(subs / f"{name}.zip"),
                            "--out", str(tmp_path / f"g-{name}"), "-q", "--brief"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, TMPDIR=str(tmp)))
        assert g.returncode == 2 and "error:" in g.stderr, g.stderr[-2000:]
        assert os.listdir(tmp) == [], (name, os.listdir(tmp))


# ----------------------------------------------------------------------------- Gradescope, templates, GPUs

def test_gradescope_zip_has_the_entry_points_and_no_solutions(tmp_path):
    out = tmp_path / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "autograder", "gradescope", "kv_cache", "--out", str(out)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(out).namelist()
    assert "setup.sh" in names and "run_autograder" in names and "autograder/cli.py" in names
    assert "autograder/suites/kv_cache/test_cache.py" in names and "data/models/tiny-qwen2.json" in names
    assert "llmsys/__init__.py" in names and "llmsys/models.py" in names, "the course library the worker imports"
    assert "autograder/remote/protocol.py" in names
    assert not any(n.startswith(("solutions/", "assignments/")) for n in names), \
        "the reference must not ship to students' graders"
    run = zipfile.ZipFile(out).read("run_autograder").decode()
    assert "--impl /autograder/submission --out /autograder/results" in run and "kv_cache" in run
    assert (zipfile.ZipFile(out).getinfo("run_autograder").external_attr >> 16) & 0o111, \
        "run_autograder must be executable"
    setup = zipfile.ZipFile(out).read("setup.sh").decode()
    assert "apt-get install -y -qq bubblewrap" in setup, "the sandbox must be installed on Gradescope"
    assert "requirements.lock" in names and "-c /tmp/llmsys-constraints.txt" in setup, \
        "Gradescope must install the versions grading was checked with (requirements.lock)"
    assert '".[deepspeed]"' in setup, "zero's DeepSpeed comparison needs deepspeed on Gradescope"
    assert subprocess.run(["bash", "-n"], input=setup, text=True).returncode == 0


def test_slurm_template_grades_the_task_s_submission(tmp_path):
    """The Slurm array script, run as task 1 of a class of two, grades the second submission with
    grade-all's record, so the final grade-all grades only the first."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    build(subs / "a-stub", "assignments")
    build(subs / "b-ref", "solutions")
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", PY=sys.executable, ASSIGNMENTS="kv_cache -k bytes_real")
    r = subprocess.run(["bash", str(REPO_ROOT / "docs" / "templates" / "slurm-grade-array.sh"), str(subs), str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "b-ref" / "results.json").exists() and not (out / "a-stub").exists()
    assert '"score": 1.0' in (out / "b-ref" / "results.json").read_text()
    final = grade_all(subs, out, "-k", "bytes_real")
    assert "1 already graded, 1 to grade" in final.stdout, final.stdout
    rows = book(out)
    assert rows["b-ref"]["total"] == "1.0" and rows["a-stub"]["total"] == "0.0"


def test_github_actions_template_is_valid_yaml_calling_the_cli():
    import yaml

    wf = yaml.safe_load((REPO_ROOT / "docs" / "templates" / "github-actions-gpu.yml").read_text())
    steps = wf["jobs"]["grade"]["steps"]
    assert wf["jobs"]["grade"]["runs-on"] == ["self-hosted", "gpu"]
    assert any("python3 -m autograder grade-all" in s.get("run", "") for s in steps)


def test_grade_all_gives_each_job_its_own_gpu_uid_and_private_folders(tmp_path, monkeypatch):
    """With 2 GPUs and --jobs 4, two students are graded at a time, never two on the same GPU or
    with the same sandbox uid; each job's folder exists, empty and 0700, before it starts."""
    import threading

    from autograder import classroom

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    subs, out = tmp_path / "subs", tmp_path / "out"
    for s in "abcde":
        (subs / s / "kv_cache").mkdir(parents=True)
    (out / "c").mkdir(parents=True)
    (out / "c" / "results.json").write_text("forged")
    using, seen, lock = {}, [], threading.Lock()

    def fake_grade_one(student, path, out, assignments, keyword, memory_gb=None, gpu=None, env=None):
        dest = out / student
        assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o700 and os.listdir(dest) == []
        assert stat.S_IMODE(os.stat(env["TMPDIR"]).st_mode) == 0o711 and os.listdir(env["TMPDIR"]) == []
        with lock:
            assert gpu not in {g for g, _ in using.values()}, f"GPU {gpu} given to two jobs at once"
            assert env["AUTOGRADER_SANDBOX_UID"] not in {u for _, u in using.values()}, \
                "a sandbox uid given to two jobs"
            using[student] = (gpu, env["AUTOGRADER_SANDBOX_UID"])
            seen.append((gpu, memory_gb, env["AUTOGRADER_SANDBOX_UID"]))
        time.sleep(0.05)
        with lock:
            del using[student]
        return student, "graded"

    monkeypatch.setattr(classroom, "grade_one", fake_grade_one)
    assert classroom.grade_all(subs, out, ["kv_cache"], jobs=4, fresh=True, keyword=None) == 0
    assert {g for g, _, _ in seen} == {"3", "5"} and len(seen) == 5
    assert len({u for _, _, u in seen}) == 2 and all(int(u) >= 61000 for _, _, u in seen)
    from autograder.runner import host_memory_limit

    assert all(abs(m - host_memory_limit() / 2**30 / 2) < 1e-6 for _, m, _ in seen), "each job gets its share of RAM"
    # the fake wrote no grade.json: nobody is graded, and the gradebook says why
    rows = book(out)
    assert all(r["status"] == "not graded: the grader wrote no readable grade.json" for r in rows.values()), rows
