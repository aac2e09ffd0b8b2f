"""Paged-attention benchmark (GPU): per grid case, time and KV bandwidth of the implementation,
vLLM's kernel and naive PyTorch (gather + SDPA), against the device's measured copy bandwidth.

Writes paged_attention.json, paged_attention.md (the table) and paged_attention.png
(roofline-style: achieved GB/s of KV against KV bytes, with the copy bandwidth as ceiling).
PA_TUNE=1 also sweeps tile size / warps / stages of the implementation's kernels.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

from .. import baselines, timing
from ..checks import assert_close
from ..environment import describe, one_line
from ..impl import load


def copy_bandwidth_gbps(nbytes: int = 2 << 30) -> float:
    """A large device-to-device copy: (bytes read + bytes written) / time, median of 20."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ts = []
    for _ in range(25):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts = sorted(ts[5:])
    return 2 * src.nbytes / (ts[len(ts) // 2] * 1e-3) / 1e9


def run(out: Path) -> int:
    if not torch.cuda.is_available():
        print("bench paged_attention needs a CUDA GPU (correctness on CPU: python -m autograder grade paged_attention)")
        return 1
    from autograder.fixtures.pa_bench import GRID, gpu_case, sample_rows
    from autograder.fixtures.paged_attention import reference

    naive_torch = baselines.get("naive.paged_attention").impl

    k = load("paged_attention", "kernels")
    base = baselines.get("vllm.paged_attention")
    copy_bw = copy_bandwidth_gbps()
    env = describe()
    print(f"{one_line(env)}\ndevice copy bandwidth: {copy_bw:.0f} GB/s")
    if not base.available:
        print(f"vLLM not compared: {base.reason}")
    gen = torch.Generator().manual_seed(0)
    if os.environ.get("PA_TUNE"):
        _tune(k, gen, gpu_case, GRID)
        if os.environ.get("PA_TUNE_ONLY"):
            return 0
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for name, lens_fn in GRID:
            vllm = base.impl if base.available else None

            sizes: list[int] = []  # KV bytes of each timed trial's draw (ragged cases differ per trial)

            def make_inputs(trial, lens_fn=lens_fn, dtype=dtype, vllm=vllm, sizes=sizes):
                case = gpu_case(lens_fn(gen), dtype, gen)
                if trial >= 0:
                    sizes.append(case.kv_bytes)
                kn, vn = vllm.prepare(case.key_cache, case.value_cache) if vllm else (None, None)
                return case, kn, vn, torch.empty_like(case.query), torch.empty_like(case.query)

            fns = {"impl": lambda i: k.paged_attention(i[0].query, i[0].key_cache, i[0].value_cache, i[0].block_tables,
                                                       i[0].seq_lens, i[0].scale, i[0].max_seq_len, out=i[3]),
                   "naive": lambda i: naive_torch(i[0])}
            if vllm:
                fns["vllm"] = lambda i, vllm=vllm: vllm(i[4], i[0].query, i[1], i[2], i[0].block_tables, i[0].seq_lens,
                                                        i[0].scale, i[0].max_seq_len)

            def check(inp, o, dtype=dtype):
                r = sorted({0, len(inp[0].seq_lens) - 1})
                assert_close(o[r], reference(sample_rows(inp[0], r), torch.float32), what="bench output", dtype=dtype)

            cmp = timing.compare(fns, make_inputs, check, student="impl", baseline="vllm" if vllm else "naive",
                                 warmup=3, min_trials=15, max_trials=40, budget_s=20)
            row = {"case": name, "dtype": str(dtype).split(".")[-1], "kv_mb": statistics.median(sizes) / 1e6}
            for n, t in cmp.timings.items():
                row[f"{n}_us"] = t.median_ms * 1e3
                row[f"{n}_gbps"] = cmp.median_rate(n, sizes) / 1e9
            row["impl_pct_copy"] = 100 * row["impl_gbps"] / copy_bw
            if vllm:
                row["ratio_vs_vllm"] = row["vllm_us"] / row["impl_us"]
            row["ratio_vs_naive"] = row["naive_us"] / row["impl_us"]
            rows.append(row)
            print(f"{name:22} {row['dtype']:8} KV {row['kv_mb']:8.1f} MB  impl {row['impl_us']:8.1f} us "
                  f"{row['impl_gbps']:6.0f} GB/s "
                  f"({row['impl_pct_copy']:4.0f}% copy)  vllm {row.get('vllm_us', float('nan')):8.1f} us "
                  f"{row.get('vllm_gbps', float('nan')):6.0f} GB/s  naive {row['naive_us']:9.1f} us  "
                  f"x{row.get('ratio_vs_vllm', float('nan')):.2f} vLLM", flush=True)
    table = ["| case | dtype | KV MB | impl µs | impl GB/s | % copy BW | vLLM µs | vLLM GB/s | naive µs "
             "| impl / vLLM speed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['case']} | {r['dtype']} | {r['kv_mb']:.1f} | {r['impl_us']:.1f} | {r['impl_gbps']:.0f} | "
                     f"{r['impl_pct_copy']:.0f}% | {r.get('vllm_us', float('nan')):.1f} | "
                     f"{r.get('vllm_gbps', float('nan')):.0f} | "
                     f"{r['naive_us']:.1f} | {r.get('ratio_vs_vllm', float('nan')):.2f}x |")
    header = (f"{one_line(env)}; device copy bandwidth {copy_bw:.0f} GB/s; baseline: "
              f"{base.description if base.available else 'none (' + base.reason + ')'}")
    (out / "paged_attention.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    (out / "paged_attention.json").write_text(json.dumps({"copy_gbps": copy_bw, "rows": rows, "environment": env,
                                                          "baseline": base.description}, indent=2))
    _plot(rows, copy_bw, env, out)
    return 0


def _plot(rows, copy_bw, env, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, mark, label in (("impl", "o", "implementation"), ("vllm", "s", "vLLM"), ("naive", "x", "naive PyTorch")):
        pts = [(r["kv_mb"], r[f"{key}_gbps"]) for r in rows if f"{key}_gbps" in r]
        if pts:
            ax.scatter(*zip(*pts), marker=mark, label=label)
    ax.axhline(copy_bw, color="k", ls="--", lw=1, label=f"device copy {copy_bw:.0f} GB/s")
    ax.set(xscale="log", xlabel="KV cache read per call (MB)", ylabel="achieved GB/s of KV",
           title=f"paged decode attention on {env.get('gpu')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "paged_attention.png", dpi=120)


def _tune(k, gen, gpu_case, grid):
    """Sweep the reference kernels' launch parameters on a small and a large case."""
    import triton

    wanted = os.environ.get("PA_TUNE_CASES", "b8-c16384,b256-c1024,b1-c4096").split(",")
    for name, lens_fn in [g for g in grid if g[0] in wanted]:
        case = gpu_case(lens_fn(gen), torch.float16, gen)
        args = (case.query, case.key_cache, case.value_cache, case.block_tables, case.seq_lens, case.scale)
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        for splits in sorted({1, 2, k.choose_num_splits(len(case.seq_lens), 8, case.max_seq_len, sms), 4, 16, 64}):
            for tile in (32, 64, 128):
                for warps in (4, 8):
                    for stages in (2, 3, 4):
                        try:
                            f = (lambda: k.paged_attention_decode(*args, tile_n=tile, num_warps=warps,
                                                                  num_stages=stages)) if splits == 1 \
                                else (lambda: k.paged_attention_decode_split_k(*args, splits, case.max_seq_len,
                                                                                tile_n=tile, num_warps=warps,
                                                                                num_stages=stages))
                            ms = triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
                            print(f"TUNE {name:12} splits {splits:3d} tile {tile:3d} warps {warps} stages {stages}: "
                                  f"{ms * 1e3:8.1f} us {case.kv_bytes / ms / 1e6:6.0f} GB/s", flush=True)
                        except Exception as e:  # noqa: BLE001
                            print(f"TUNE {name} splits {splits} tile {tile} warps {warps} stages {stages}: "
                                  f"{type(e).__name__}")
