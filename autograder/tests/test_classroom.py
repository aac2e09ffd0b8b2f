"""grade-all over a class folder (resumable, gradebook.csv) and the Gradescope zip."""
import csv
import shutil
import subprocess
import sys
import zipfile

from autograder import REPO_ROOT


def test_grade_all_writes_a_gradebook_and_resumes(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copytree(REPO_ROOT / "solutions", subs / "alice", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.make_archive(str(subs / "bob"), "zip", REPO_ROOT / "assignments")
    (subs / "notes.txt").write_text("not a submission")
    cmd = [sys.executable, "-m", "autograder", "grade-all", str(subs), "kv_cache", "block_manager", "--out",
           str(tmp_path / "out"), "--jobs", "2", "-k", "bytes_real or chained"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = {row["student"]: row for row in csv.DictReader(open(tmp_path / "out" / "gradebook.csv"))}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["kv_cache"] == "1.0" and rows["alice"]["block_manager"] == "1.0" and rows["alice"]["total"] == "2.0"
    assert rows["bob"]["total"] == "0.0" and rows["bob"]["status"] == "graded"
    assert (tmp_path / "out" / "alice" / "results.json").exists()
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert "2 already graded, 0 to grade" in again.stdout, again.stdout


def test_gradescope_zip_has_the_entry_points_and_no_solutions(tmp_path):
    out = tmp_path / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "autograder", "gradescope", "kv_cache", "--out", str(out)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(out).namelist()
    assert "setup.sh" in names and "run_autograder" in names and "autograder/cli.py" in names
    assert "autograder/suites/kv_cache/test_cache.py" in names and "data/models/tiny-qwen2.json" in names
    assert not any(n.startswith(("solutions/", "assignments/")) for n in names), "the reference must not ship to students' graders"
    run = zipfile.ZipFile(out).read("run_autograder").decode()
    assert "--impl /autograder/submission --out /autograder/results" in run and "kv_cache" in run
    assert (zipfile.ZipFile(out).getinfo("run_autograder").external_attr >> 16) & 0o111, "run_autograder must be executable"


def test_slurm_template_grades_the_task_s_submission(tmp_path):
    """The Slurm array script, run as task 1 of a class of two, grades the second submission."""
    import os

    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copytree(REPO_ROOT / "assignments", subs / "a-stub", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "solutions", subs / "b-ref", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", PY=sys.executable, ASSIGNMENTS="kv_cache -k bytes_real")
    r = subprocess.run(["bash", str(REPO_ROOT / "docs" / "templates" / "slurm-grade-array.sh"), str(subs), str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "b-ref" / "results.json").exists() and not (tmp_path / "out" / "a-stub").exists()
    assert '"score": 1.0' in (tmp_path / "out" / "b-ref" / "results.json").read_text()


def test_github_actions_template_is_valid_yaml_calling_the_cli():
    import yaml

    wf = yaml.safe_load((REPO_ROOT / "docs" / "templates" / "github-actions-gpu.yml").read_text())
    steps = wf["jobs"]["grade"]["steps"]
    assert wf["jobs"]["grade"]["runs-on"] == ["self-hosted", "gpu"]
    assert any("python3 -m autograder grade-all" in s.get("run", "") for s in steps)


def test_grade_all_gives_each_job_its_own_gpu(tmp_path, monkeypatch):
    """With 2 GPUs and --jobs 4, two students are graded at a time, never two on the same GPU."""
    import threading
    import time

    from autograder import classroom

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    subs = tmp_path / "subs"
    for s in "abcde":
        (subs / s / "kv_cache").mkdir(parents=True)
    using, seen, lock = {}, [], threading.Lock()

    def fake_grade_one(student, path, out, assignments, keyword, memory_gb=None, gpu=None):
        with lock:
            assert gpu not in using.values(), f"GPU {gpu} given to two jobs at once"
            using[student] = gpu
            seen.append((gpu, memory_gb))
        time.sleep(0.05)
        with lock:
            del using[student]
        return student, "graded"

    monkeypatch.setattr(classroom, "grade_one", fake_grade_one)
    assert classroom.grade_all(subs, tmp_path / "out", ["kv_cache"], jobs=4, fresh=True, keyword=None) == 0
    assert {g for g, _ in seen} == {"3", "5"} and len(seen) == 5
    from autograder.runner import host_memory_limit

    assert all(abs(m - host_memory_limit() / 2**30 / 2) < 1e-6 for _, m in seen), "each job gets its share of RAM"
