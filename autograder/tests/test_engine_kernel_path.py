"""The reference engine's GPU path, run on the CPU in Triton's interpreter: steps that mix
prompt chunks with decodes (decodes through the paged-attention kernel, chunks through the
PyTorch path) give the same greedy tokens as the all-PyTorch path."""
import os
import subprocess
import sys

from autograder import REPO_ROOT, SUITES_DIR


def _run_reference(script: str, interpret: bool) -> None:
    """Run `script` on the reference (solutions/) in a fresh interpreter, with Triton's interpreter
    if asked; it must print "ok"."""
    env = dict(os.environ, AUTOGRADER_IMPL=str(REPO_ROOT / "solutions"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(SUITES_DIR / "engine")]))
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", script], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]


SCRIPT = r"""
import torch
from autograder.impl import Modules, load
from autograder.fixtures.engine import path, prompts
eng = Modules("engine")
ps = prompts(torch.Generator().manual_seed(0), [5, 30, 3, 17, 9])
P = eng.llm.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
outs = []
for kernels in (False, True):
    llm = eng.llm.LLM(path(), max_model_len=64, num_kv_blocks=64, block_size=8, max_num_batched_tokens=16,
                      max_num_seqs=4)
    if kernels:
        llm.engine.runner.kernels = load("paged_attention", "kernels")
    outs.append([o.outputs[0].token_ids for o in llm.generate(ps, P)])
    mixed = [s for s in llm.engine.stats if s.num_tokens > s.num_running]
    assert mixed, "the workload must produce mixed prefill + decode steps"
assert outs[0] == outs[1], outs
print("ok")
"""


def test_mixed_steps_through_the_kernels_match_the_pytorch_path():
    _run_reference(SCRIPT, interpret=True)


UNIFIED = r"""
import torch
from autograder.impl import load
from llmsys import cdiv
attend = load("kv_cache", "attention").attend
ua = load("engine", "unified_attention")
mr = load("engine", "model_runner")
g = torch.Generator().manual_seed(0)
for H, Hkv, D, bs in ((4, 2, 16, 8), (8, 2, 32, 16), (6, 3, 24, 4)):
    # q_lens: decodes, a whole prompt, prompt chunks after a cached context (q_len < seq_len)
    q_lens, seq_lens = [1, 37, 5, 1, 20], [9, 37, 41, 70, 23]
    num_blocks = sum(cdiv(n, bs) for n in seq_lens) + 3
    kc = torch.full((num_blocks, bs, Hkv, D), float("nan"))  # never-written slots are NaN
    vc = torch.full_like(kc, float("nan"))
    perm = torch.randperm(num_blocks, generator=g).tolist()
    width = max(cdiv(n, bs) for n in seq_lens)
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    for s, n in enumerate(seq_lens):
        for b in range(cdiv(n, bs)):
            tables[s, b] = perm.pop()
        idx = torch.arange(n)
        kc[tables[s, idx // bs].long(), idx % bs] = torch.randn(n, Hkv, D, generator=g)
        vc[tables[s, idx // bs].long(), idx % bs] = torch.randn(n, Hkv, D, generator=g)
    qsl = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(qsl[-1]), H, D, generator=g)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    inputs = mr.BatchInputs(None, None, None, qsl, lens, tables, max(seq_lens), False)
    want = mr.paged_attention_reference(q, kc, vc, inputs, D ** -0.5, attend)
    got = ua.unified_attention(q, kc, vc, qsl, lens, tables, D ** -0.5, max_query_len=int(q.shape[0]))
    err = (got - want).abs().max().item()
    assert err < 1e-5, (H, Hkv, D, bs, err)
print("ok")
"""


def test_unified_attention_matches_the_pytorch_path():
    """The given prompt-chunk kernel (engine/unified_attention.py), in the interpreter, fp32:
    decodes, whole prompts and chunks after a cached context, GQA, head sizes not a power of
    two, NaN in every slot not written."""
    _run_reference(UNIFIED, interpret=True)


SAMPLE_BATCH = r"""
import torch
from autograder.impl import load
llm = load("engine", "llm")
seq_mod = load("engine", "sequence")
SP = llm.SamplingParams
g = torch.Generator().manual_seed(0)
logits = torch.randn(6, 50, generator=g)
greedy, hot = SP(temperature=0.0), SP(temperature=1.0, top_k=3)
seeded = SP(temperature=1.0, seed=7)
seqs = [seq_mod.Sequence(f"s{i}", [1], p, generator=torch.Generator().manual_seed(7) if p is seeded else None)
        for i, p in enumerate([greedy, hot, greedy, seeded, hot])]
rows = [5, 0, 2, 3, 1]                     # row of logits of each sequence (a prompt-chunk row skipped)
toks = llm.sample_batch(logits, rows, seqs)
assert toks[0] == int(logits[5].argmax()) and toks[2] == int(logits[2].argmax()), toks
for j in (1, 4):                           # top-k 3 of its own row
    assert toks[j] in logits[rows[j]].topk(3).indices.tolist(), (j, toks)
alone = load("kv_cache", "sampling").sample(logits[3:4], seeded, torch.Generator().manual_seed(7))
assert toks[3] == int(alone[0]), (toks, alone)  # a seeded row draws from its own generator alone
print("ok")
"""


def test_sample_batch_groups_rows_and_keeps_seeds_alone():
    """The given batched sampling (engine/llm.py sample_batch): each sequence gets the token of its
    own row, greedy rows the argmax, top-k rows one of their own top k, a seeded row exactly what
    sample() draws for it alone with its generator."""
    _run_reference(SAMPLE_BATCH, interpret=False)
