"""Baseline detection says why a comparison cannot be made; models resolve the three ways a user names them."""
import subprocess
import sys

import pytest

from autograder import REPO_ROOT, baselines
from llmsys.models import model_path


def test_every_baseline_reports_availability_with_a_reason():
    want = {"transformers.generate", "vllm.paged_attention", "vllm.reshape_and_cache", "vllm.block_pool",
            "vllm.engine", "deepspeed.zero", "naive.paged_attention"}
    assert want <= set(baselines.names())
    for name in baselines.names():
        b = baselines.get(name)
        assert isinstance(b.available, bool)
        assert b.available or b.reason, f"{name} is unavailable without saying why"
    with pytest.raises(KeyError, match="known"):
        baselines.get("no.such.baseline")


def test_course_model_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSYS_CACHE", str(tmp_path))
    first = model_path("tiny-qwen2")
    assert (first / "config.json").exists() and list(first.glob("*.safetensors"))
    mtime = (first / "config.json").stat().st_mtime
    assert model_path("tiny-qwen2") == first and (first / "config.json").stat().st_mtime == mtime
    with pytest.raises(FileNotFoundError, match="known"):
        model_path("no-such-model")


def test_model_named_by_folder_env_or_course_name(tmp_path):
    """load_model(folder), MODEL_PATH=folder with load_model(), and a course config name load the same weights."""
    code = ("import sys, torch; sys.path.insert(0, 'solutions'); "
            "from kv_cache.model import load_model, resolve_checkpoint; "
            "from llmsys.models import model_path; p = model_path('tiny-llama'); "
            "a = load_model(p); b = load_model(); c = load_model('tiny-llama'); "
            "print(resolve_checkpoint() == p, all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in "
            "zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values())))")
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO_ROOT))
    env["MODEL_PATH"] = str(model_path("tiny-llama"))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


def test_list_shows_points_and_tiers():
    out = subprocess.run([sys.executable, "-m", "autograder", "list"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    for name in ("kv_cache", "block_manager", "paged_attention"):
        assert name in out.stdout
    assert "speed" in out.stdout and "correctness" in out.stdout
