"""Serving-runtime benchmark (GPU): offline throughput of the engine against transformers' static
batching and, where vLLM is importable, vLLM's LLM.generate, on the same workload and KV memory
(autograder/fixtures/engine_bench.py); time to first token and inter-token latency
percentiles; a plot of running batch size and KV-cache use over time (PNG)."""
from __future__ import annotations

import json
from pathlib import Path

from .. import baselines
from ..environment import describe, one_line


def _vllm(eb, reqs):
    """vLLM on the same random-weight model (load_format="dummy", token-id prompts, no tokenizer)."""
    import time

    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from llmsys.models import model_path

    llm = LLM(model=str(model_path(eb.MODEL)), dtype="bfloat16", load_format="dummy", skip_tokenizer_init=True,
              max_model_len=eb.MAX_MODEL_LEN, num_gpu_blocks_override=eb.KV_BLOCKS, block_size=eb.BLOCK_SIZE,
              max_num_seqs=eb.MAX_NUM_SEQS, enable_prefix_caching=False, gpu_memory_utilization=0.5)
    prompts = [TokensPrompt(prompt_token_ids=r.prompt) for r in reqs]
    params = [SamplingParams(temperature=0.0, max_tokens=r.output_len, ignore_eos=True) for r in reqs]
    llm.generate(prompts[:8], params[:8])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    llm.generate(prompts, params)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def _plot(res, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from autograder.fixtures import engine_bench as eb

    t = [s["t"] for s in res.timeline]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [s["running"] for s in res.timeline], label="running sequences", color="C0")
    ax.plot(t, [s["waiting"] for s in res.timeline], label="waiting", color="C1", alpha=0.7)
    ax.set_xlabel("seconds")
    ax.set_ylabel("sequences")
    ax2 = ax.twinx()
    ax2.plot(t, [100 * s["kv_blocks_used"] / eb.KV_BLOCKS for s in res.timeline], color="C2", label="KV cache used")
    ax2.set_ylabel("KV cache used (%)")
    ax2.set_ylim(0, 105)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    ax.set_title(f"Continuous batching: {len(res.outputs)} requests, {eb.KV_BLOCKS} KV blocks of {eb.BLOCK_SIZE}")
    fig.tight_layout()
    path = out / "engine_timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(out: Path) -> int:
    import torch

    from autograder.fixtures import engine_bench as eb

    from ..impl import Modules

    print(one_line())
    if not torch.cuda.is_available():
        print("no GPU: the engine benchmark needs CUDA (the engine's CPU path is graded for correctness only)")
        return 0
    eng = Modules("engine")
    llm = eb.make_llm(eng)
    hf = eb.hf_model()
    vocab = llm.model.config.vocab_size
    warm = eb.workload(1, vocab, n=8)
    eb.run_engine(eng, llm, warm)
    eb.run_static_batching(hf, warm)
    reqs = eb.workload(2, vocab)
    logits = eb.first_token_logits(hf, reqs)
    ours = eb.run_engine(eng, llm, reqs)
    eb.check_outputs(ours, reqs, logits, "engine")
    static = eb.run_static_batching(hf, reqs)
    eb.check_outputs(static, reqs, logits, "transformers")
    tokens = sum(r.output_len for r in reqs)
    prompt_tokens = sum(len(r.prompt) for r in reqs)
    rows = [("student engine", ours.seconds), ("transformers static batching", static.seconds)]
    base = baselines.get("vllm.engine")
    if base.available:
        try:
            rows.append((f"vLLM {base.version} LLM.generate", _vllm(eb, reqs)))
        except Exception as e:  # noqa: BLE001 - a vLLM that will not start is reported, not fatal
            print(f"vLLM not compared: {type(e).__name__}: {e}")
    else:
        print(f"vLLM LLM.generate not compared: {base.reason}")
    print(f"\n{len(reqs)} requests, {prompt_tokens} prompt + {tokens} output tokens, KV memory {eb.KV_BLOCKS} blocks "
          f"x {eb.BLOCK_SIZE} tokens (= {eb.STATIC_BATCH} x max_model_len {eb.MAX_MODEL_LEN}), bf16, {eb.MODEL}:")
    print(f"  {'':34} {'s':>7} {'req/s':>7} {'out tok/s':>10} {'total tok/s':>12} {'vs static':>10}")
    for name, s in rows:
        print(f"  {name:34} {s:>7.2f} {len(reqs) / s:>7.2f} {tokens / s:>10.0f} {(tokens + prompt_tokens) / s:>12.0f} "
              f"{static.seconds / s:>9.2f}x")
    ttft, itl = eb.percentiles(ours.ttft_s), eb.percentiles(ours.itl_s)
    print(f"\nengine latency (all requests arrive at t=0): TTFT p50/p90/p99 {ttft['p50']:.3f} / {ttft['p90']:.3f} / "
          f"{ttft['p99']:.3f} s;  ITL p50/p90/p99 {1e3 * itl['p50']:.1f} / {1e3 * itl['p90']:.1f} / {1e3 * itl['p99']:.1f} ms")
    print(f"peak running sequences {max(s['running'] for s in ours.timeline)}, "
          f"peak KV use {100 * max(s['kv_blocks_used'] for s in ours.timeline) / eb.KV_BLOCKS:.0f}%, "
          f"engine steps {len(ours.timeline)}, preemptions {llm.engine.scheduler.num_preemptions}")
    result = dict(environment=describe(), requests=len(reqs), prompt_tokens=prompt_tokens, output_tokens=tokens,
                  kv_blocks=eb.KV_BLOCKS, block_size=eb.BLOCK_SIZE, static_batch=eb.STATIC_BATCH,
                  seconds={n: s for n, s in rows}, ttft_s=ttft, itl_s=itl, timeline=ours.timeline,
                  vllm=None if base.available else base.reason)
    (out / "engine.json").write_text(json.dumps(result, indent=1, default=str))
    png = _plot(ours, out)
    print(f"\nwrote {out / 'engine.json'}" + (f" and {png}" if png else ""))
    return 0
