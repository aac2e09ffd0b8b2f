"""Decode time per token against sequence length: cached, recomputed, and transformers' cached.

On a GPU: the Qwen2.5-0.5B-shaped model in bf16, batch 1, contexts 256 to 4096. On a CPU
(ungraded, for intuition): the tiny course model in fp32, contexts 64 to 1024. Time per
decode token = (time of generate with N new tokens - time with 1) / (N - 1), the median of
several runs, so prefill is taken out. Writes kv_cache_decode.png and kv_cache_decode.json.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ..environment import describe, one_line
from ..impl import load
from llmsys.models import model_path


def _timer(cuda: bool):
    def timed(fn, reps):
        ts = []
        for _ in range(reps):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)
    return timed


def run(out: Path) -> int:
    cuda = torch.cuda.is_available()
    kvm, kvg, kvs = load("kv_cache", "model"), load("kv_cache", "generate"), load("kv_cache", "sampling")
    from transformers import AutoModelForCausalLM

    if cuda:
        name, dtype, dev = "bench-qwen2.5-0.5b", torch.bfloat16, "cuda"
        lengths, new, reps = [256, 512, 1024, 2048, 4096], 17, 3
    else:
        name, dtype, dev, lengths, new, reps = "tiny-qwen2", torch.float32, "cpu", [64, 128, 256, 512, 1024], 17, 3
    path = model_path(name)
    ours = kvm.load_model(path, dtype=dtype, device=dev)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev).eval()
    timed = _timer(cuda)
    rows = []
    for L in lengths:
        prompt = torch.randint(3, ours.config.vocab_size, (L,)).tolist()
        ids = torch.tensor([prompt], device=dev)

        def per_token(fn):
            return (timed(lambda: fn(new), reps) - timed(lambda: fn(1), reps)) / (new - 1) * 1e3

        def ours_fn(use_cache):
            return lambda n: kvg.generate(ours, [prompt],
                                          kvs.SamplingParams(temperature=0, max_tokens=n, ignore_eos=True),
                                          use_cache=use_cache)

        def hf_fn(n):
            with torch.no_grad():
                return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, pad_token_id=0)

        ours_fn(True)(2), hf_fn(2)  # warm-up
        row = {"context": L, "cached_ms": per_token(ours_fn(True)), "recompute_ms": per_token(ours_fn(False)),
               "transformers_ms": per_token(hf_fn)}
        row["speedup"] = row["recompute_ms"] / row["cached_ms"]
        rows.append(row)
        print(f"context {L:5d}: cached {row['cached_ms']:8.3f} ms/token   recompute {row['recompute_ms']:8.3f}   "
              f"transformers {row['transformers_ms']:8.3f}   cache speedup {row['speedup']:6.1f}x", flush=True)
    env = describe()
    where = "GPU" if cuda else "CPU (ungraded)"
    print(f"\n{name} {str(dtype).replace('torch.', '')} on {where}; {one_line(env)}")
    (out / "kv_cache_decode.json").write_text(json.dumps({"model": name, "rows": rows, "environment": env}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["context"] for r in rows]
        ax.plot(xs, [r["recompute_ms"] for r in rows], "o-", label="recompute (no cache)")
        ax.plot(xs, [r["cached_ms"] for r in rows], "o-", label="KV cache (yours)")
        ax.plot(xs, [r["transformers_ms"] for r in rows], "x--", label="transformers, cached")
        ax.set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="time per decode token (ms)",
               title=f"{name} on {env.get('gpu') or 'CPU'}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "kv_cache_decode.png", dpi=120)
        print(f"wrote {out / 'kv_cache_decode.png'}")
    except ImportError:
        print("matplotlib is not installed: no plot")
    return 0
