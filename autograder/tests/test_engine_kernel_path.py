"""The reference engine's GPU path, run on the CPU in Triton's interpreter: steps that mix
prompt chunks with decodes (decodes through the paged-attention kernel, chunks through the
PyTorch path) give the same greedy tokens as the all-PyTorch path."""
import os
import subprocess
import sys

from autograder import REPO_ROOT, SUITES_DIR

SCRIPT = r"""
import torch
from autograder.impl import Modules, load
from autograder.fixtures.engine import path, prompts
eng = Modules("engine")
ps = prompts(torch.Generator().manual_seed(0), [5, 30, 3, 17, 9])
P = eng.llm.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
outs = []
for kernels in (False, True):
    llm = eng.llm.LLM(path(), max_model_len=64, num_kv_blocks=64, block_size=8, max_num_batched_tokens=16, max_num_seqs=4)
    if kernels:
        llm.engine.runner.kernels = load("paged_attention", "kernels")
    outs.append([o.outputs[0].token_ids for o in llm.generate(ps, P)])
    mixed = [s for s in llm.engine.stats if s.num_tokens > s.num_running]
    assert mixed, "the workload must produce mixed prefill + decode steps"
assert outs[0] == outs[1], outs
print("ok")
"""


def test_mixed_steps_through_the_kernels_match_the_pytorch_path():
    env = dict(os.environ, TRITON_INTERPRET="1", AUTOGRADER_IMPL=str(REPO_ROOT / "solutions"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(SUITES_DIR / "engine")]))
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]
