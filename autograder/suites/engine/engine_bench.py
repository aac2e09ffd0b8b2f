"""The offline throughput workload, shared by the engine's speed test and `bench engine`.

128 requests from data/workloads/sharegpt_like.json, all arriving at once (vLLM's
benchmark_throughput): prompt lengths as traced (capped at 768), output lengths a quarter of
the traced ones (at most 256, so a run takes seconds, not minutes; the long tail that static
batching pays for is kept), random token ids, greedy, ignore_eos. Random weights shaped like
Qwen2.5-0.5B (data/models/bench-qwen2.5-0.5b.json), bf16.

Both systems get the same KV-cache memory: 16 sequences x max_model_len (1,024) tokens.
transformers' static batching must reserve a whole max_model_len per sequence, so it runs 16
requests at a time and each batch lasts as long as its longest request. The engine pages the
same bytes (1,024 blocks of 16 tokens) among as many requests as fit.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

from autograder import DATA_DIR
from llmsys.models import model_path

MODEL = "bench-qwen2.5-0.5b"
NUM_REQUESTS = 128
MAX_MODEL_LEN = 1024
BLOCK_SIZE = 16
STATIC_BATCH = 16                                      # transformers: sequences per batch
KV_BLOCKS = STATIC_BATCH * MAX_MODEL_LEN // BLOCK_SIZE  # the same KV bytes for the engine
MAX_NUM_SEQS = 128


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class Request:
    prompt: list[int]
    output_len: int


@dataclass
class RunResult:
    seconds: float
    outputs: list[list[int]]                    # generated token ids per request, in request order
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)  # engine: per step, time and state


def workload(seed: int, vocab: int, n: int = NUM_REQUESTS) -> list[Request]:
    trace = json.loads((DATA_DIR / "workloads" / "sharegpt_like.json").read_text())["requests"][:n]
    g = torch.Generator().manual_seed(seed)
    reqs = []
    for r in trace:
        p = min(r["prompt_len"], 768)
        reqs.append(Request(torch.randint(3, vocab, (p,), generator=g).tolist(), max(1, min(256, r["output_len"] // 4))))
    return reqs


def make_llm(eng):
    return eng.llm.LLM(str(model_path(MODEL)), dtype=torch.bfloat16, max_model_len=MAX_MODEL_LEN,
                       block_size=BLOCK_SIZE, max_num_seqs=MAX_NUM_SEQS, max_num_batched_tokens=2048,
                       num_kv_blocks=KV_BLOCKS, enable_prefix_caching=False)


def run_engine(eng, llm, reqs: list[Request]) -> RunResult:
    """All requests added at t=0, then engine steps until done; a timestamp per new token."""
    e = llm.engine
    SamplingParams = eng.llm.SamplingParams
    _sync()
    t0 = time.perf_counter()
    ids = [e.add_request(r.prompt, SamplingParams(temperature=0.0, max_tokens=r.output_len, ignore_eos=True))
           for r in reqs]
    index = {rid: i for i, rid in enumerate(ids)}
    last: dict[int, float] = {}
    ttft, itl, timeline = [0.0] * len(reqs), [], []
    first_stat = len(e.stats)
    while e.has_unfinished():
        new = e.step()
        now = time.perf_counter() - t0  # step() ends by reading sampled tokens: the GPU work is done
        for seq, _ in new:
            i = index.get(seq.seq_id)
            if i is None:
                continue
            if i in last:
                itl.append(now - last[i])
            else:
                ttft[i] = now
            last[i] = now
        if len(e.stats) > first_stat:
            s = e.stats[-1]
            timeline.append(dict(t=now, running=s.num_running, waiting=s.num_waiting, tokens=s.num_tokens,
                                 kv_blocks_used=s.kv_blocks_used))
    _sync()
    seconds = time.perf_counter() - t0
    outs = [list(e.output(r).outputs[0].token_ids) for r in ids]
    return RunResult(seconds, outs, ttft, itl, timeline)


def run_generate(eng, llm, reqs: list[Request]) -> RunResult:
    """The graded run: one `llm.generate()` for every request, on this process's clock until every
    generated token id is here. The engine runs in the submission's worker; its answer comes back
    by value, so the work is done when the clock stops."""
    from autograder.remote import client

    params = [eng.llm.SamplingParams(temperature=0.0, max_tokens=r.output_len, ignore_eos=True) for r in reqs]
    prompts = [r.prompt for r in reqs]
    _sync()
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params)
    completions = client.gather(outs, "outputs")
    tokens = client.gather([c[0] for c in completions], "token_ids")
    seconds = time.perf_counter() - t0
    return RunResult(seconds, [list(t) for t in tokens])


def run_vllm(vo, reqs: list[Request]) -> RunResult:
    """vLLM's LLM.generate on the workload, in its trusted worker (baselines.engines.VllmOffline),
    on this process's clock like run_generate."""
    prompts, lens = [r.prompt for r in reqs], [r.output_len for r in reqs]
    t0 = time.perf_counter()
    outs = vo.generate(prompts, lens)
    return RunResult(time.perf_counter() - t0, outs)


def hf_model():
    from transformers import AutoModelForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(model_path(MODEL), dtype=torch.bfloat16).to(dev).eval()


@torch.no_grad()
def run_static_batching(hf, reqs: list[Request], batch: int = STATIC_BATCH) -> RunResult:
    """transformers generate() on batches of `batch` requests in arrival order, left-padded; each
    batch decodes until its longest request is done (the static-batching waste)."""
    _sync()
    t0 = time.perf_counter()
    outs, ttft = [], []
    for b in range(0, len(reqs), batch):
        chunk = reqs[b:b + batch]
        width = max(len(r.prompt) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(chunk):
            ids[i, width - len(r.prompt):] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt):] = 1
        n = max(r.output_len for r in chunk)
        out = hf.generate(ids.to(hf.device), attention_mask=mask.to(hf.device), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0)
        for i, r in enumerate(chunk):
            outs.append(out[i, width:width + r.output_len].tolist())
    _sync()
    return RunResult(time.perf_counter() - t0, outs, ttft)


@torch.no_grad()
def first_token_logits(hf, reqs: list[Request], k: int = 4) -> list[torch.Tensor]:
    """transformers' next-token logits after each of the first k prompts (to check timed outputs)."""
    return [hf(torch.tensor([r.prompt], device=hf.device), logits_to_keep=1).logits[0, -1].float() for r in reqs[:k]]


def check_outputs(res: RunResult, reqs: list[Request], logits: list[torch.Tensor], who: str) -> None:
    assert len(res.outputs) == len(reqs), f"{who}: {len(res.outputs)} outputs for {len(reqs)} requests"
    for i, (o, r) in enumerate(zip(res.outputs, reqs)):
        assert len(o) == r.output_len, f"{who}: request {i} got {len(o)} tokens, asked for {r.output_len} (ignore_eos)"
    for i, row in enumerate(logits):
        tok = res.outputs[i][0]
        gap = float(row.max() - row[tok])  # bf16 kernels differ in rounding: greedy up to a near-tie
        assert gap <= 0.25 * float(row.std()), \
            f"{who}: request {i} starts with token {tok}, {gap:.3g} below transformers' greedy token {int(row.argmax())}"


def percentiles(xs: list[float], ps=(50, 90, 99)) -> dict[str, float]:
    if not xs:
        return {f"p{p}": float("nan") for p in ps}
    s = sorted(xs)
    return {f"p{p}": s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] for p in ps}
