"""Serving-runtime benchmark (GPU): offline throughput of the engine against transformers' static
batching and, where vLLM is importable, vLLM's LLM.generate, on the same workload and KV memory
(autograder/fixtures/engine_bench.py); time to first token and inter-token latency
percentiles; a plot of running batch size and KV-cache use over time (PNG)."""
from __future__ import annotations

import gc
import json
from pathlib import Path

from .. import baselines
from ..environment import describe, one_line


def _vllm(eb, warm, reqs, eager: bool) -> dict:
    """vLLM's LLM.generate on the same checkpoint (the same weights) and KV blocks, in a process of
    its own (autograder/baselines/engines.py main): `import vllm` changes the importing process."""
    import os
    import subprocess
    import sys
    import tempfile

    from llmsys.models import model_path

    w = dict(max_model_len=eb.MAX_MODEL_LEN, kv_blocks=eb.KV_BLOCKS, block_size=eb.BLOCK_SIZE,
             max_num_seqs=eb.MAX_NUM_SEQS, warm=[[r.prompt, r.output_len] for r in warm],
             requests=[[r.prompt, r.output_len] for r in reqs])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(w, f)
    try:
        cmd = [sys.executable, "-m", "autograder.baselines.engines", str(model_path(eb.MODEL)), f.name]
        r = subprocess.run(cmd + (["--eager"] if eager else []), capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(f.name)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("VLLM_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"vLLM exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    return json.loads(line[len("VLLM_RESULT "):])


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
    warm = eb.workload(1, vocab)  # a whole workload: every CUDA-graph bucket captured before the timed run
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
    engine_steps, preemptions = len(ours.timeline), llm.engine.scheduler.num_preemptions
    del llm, hf  # vLLM checks the GPU's free memory at start-up
    gc.collect()
    torch.cuda.empty_cache()
    latency = {"student engine": (ours.ttft_s, ours.itl_s)}
    vllm_runs = {}
    base = baselines.get("vllm.engine")
    if base.available:
        for eager in (False, True):
            try:
                v = _vllm(eb, warm, reqs, eager)
            except Exception as e:  # noqa: BLE001 - a vLLM that will not start is reported, not fatal
                print(f"vLLM ({'eager' if eager else 'compiled'}) not compared: {type(e).__name__}: {e}")
                continue
            eb.check_outputs(eb.RunResult(min(v["generate_s"]), v["outputs"]), reqs, logits, v["description"])
            rows.append((v["description"], min(v["generate_s"])))
            latency[v["description"]] = (v["stepped"]["ttft_s"], v["stepped"]["itl_s"])
            vllm_runs[v["description"]] = {k: x for k, x in v.items() if k != "outputs"}
    else:
        print(f"vLLM LLM.generate not compared: {base.reason}")
    print(f"\n{len(reqs)} requests, {prompt_tokens} prompt + {tokens} output tokens, KV memory {eb.KV_BLOCKS} blocks "
          f"x {eb.BLOCK_SIZE} tokens (= {eb.STATIC_BATCH} x max_model_len {eb.MAX_MODEL_LEN}), bf16, {eb.MODEL}:")
    print(f"  {'':55} {'s':>7} {'req/s':>7} {'out tok/s':>10} {'total tok/s':>12} {'vs static':>10} {'engine is':>10}")
    for name, s in rows:
        print(f"  {name:55} {s:>7.2f} {len(reqs) / s:>7.2f} {tokens / s:>10.0f} {(tokens + prompt_tokens) / s:>12.0f} "
              f"{static.seconds / s:>9.2f}x {s / ours.seconds:>9.2f}x")
    print("\nlatency (all requests arrive at t=0; vLLM stepped through LLMEngine.step, a second run):")
    for name, (tt, it) in latency.items():
        ttft, itl = eb.percentiles(tt), eb.percentiles(it)
        print(f"  {name:55} TTFT p50/p90/p99 {ttft['p50']:.3f} / {ttft['p90']:.3f} / {ttft['p99']:.3f} s;  "
              f"ITL p50/p90/p99 {1e3 * itl['p50']:.1f} / {1e3 * itl['p90']:.1f} / {1e3 * itl['p99']:.1f} ms")
    print(f"peak running sequences {max(s['running'] for s in ours.timeline)}, "
          f"peak KV use {100 * max(s['kv_blocks_used'] for s in ours.timeline) / eb.KV_BLOCKS:.0f}%, "
          f"engine steps {engine_steps}, preemptions {preemptions}")
    result = dict(environment=describe(), requests=len(reqs), prompt_tokens=prompt_tokens, output_tokens=tokens,
                  kv_blocks=eb.KV_BLOCKS, block_size=eb.BLOCK_SIZE, static_batch=eb.STATIC_BATCH,
                  seconds={n: s for n, s in rows},
                  latency={n: dict(ttft_s=eb.percentiles(tt), itl_s=eb.percentiles(it))
                           for n, (tt, it) in latency.items()},
                  timeline=ours.timeline, vllm=vllm_runs if base.available else base.reason)
    (out / "engine.json").write_text(json.dumps(result, indent=1, default=str))
    png = _plot(ours, out)
    print(f"\nwrote {out / 'engine.json'}" + (f" and {png}" if png else ""))
    return 0
