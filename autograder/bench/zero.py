"""ZeRO benchmark: memory per rank by stage (measured and the paper's formula, PNG) and, on a GPU,
ms per step and peak memory of the student's engine, DeepSpeed and plain PyTorch.

Memory: the student's engine trains the suite's tiny GPT on 4 CPU ranks (gloo) at each stage;
each rank's tensors are counted after a backward (the grader's census), next to the paper's
formula for the same parameter count. The plot adds the formula at N = 1 to 64 ranks for the
134M benchmark model and a 7.5B one (the paper's example).

Speed (GPU): world size 1 over NCCL, bf16 with fp32 AdamW, the 134M-parameter GPT of
data/training/zero-gpt-134m.json, batch 8 x 512. The student's ZeRO-k and DeepSpeed's ZeRO-k are
interleaved in the same process (autograder.timing.compare); PyTorch with autocast and fused
AdamW is the no-ZeRO reference. Peak memory is measured per contender, alone, afterwards.
"""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from .. import SUITES_DIR, baselines
from ..environment import describe, one_line

CPU_WORLD = 4


def _memory_on_cpu(zc) -> list[dict]:
    rows = []
    for stage in range(4):
        spec = zc.RunSpec(seed=0, stage=stage, world_size=CPU_WORLD, steps=2, dtype="bfloat16")
        ranks = zc.run_ranks("train_zero", CPU_WORLD, spec)
        psi = zc.num_params(spec.gpt)
        rows.append(dict(stage=stage, psi=psi, census=[r["census"] for r in ranks], report=ranks[0]["report"],
                         paper=zc.paper_bytes(stage, psi, CPU_WORLD), comm=ranks[0]["comm_total"],
                         paper_comm=zc.paper_comm(stage, 2 * psi, CPU_WORLD)))
    return rows


def _speed_on_gpu(zc, zero) -> list[dict]:
    import math

    import torch

    from .. import timing

    zc.init_single_process_group("nccl")
    cfg = zc.bench_config()
    c, opt, mb, T = zc.GPTConfig(**cfg["model"]), cfg["optimizer"], cfg["micro_batch"], cfg["seq_len"]
    gen = torch.Generator().manual_seed(0)

    def make_inputs(trial):
        return zc.random_batch(gen, c, mb, T, "cuda")

    def check(inp, loss):
        assert math.isfinite(float(loss)), "non-finite loss in a timed step"

    ds_ok = baselines.get("deepspeed.zero")
    rows = []

    def peak(make):
        gc.collect()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t = make()
        for _ in range(3):
            t.step(*make_inputs(0))
        torch.cuda.synchronize()
        p = torch.cuda.max_memory_allocated() - before
        del t
        gc.collect()
        torch.cuda.empty_cache()
        return p

    torch_make = lambda: zc.TorchTrainer(c, opt, 0, "cuda")  # noqa: E731
    tr = torch_make()
    cmp = timing.compare({"pytorch": lambda b: tr.step(*b)}, make_inputs, check, student="pytorch", baseline="pytorch",
                         warmup=3, min_trials=10, max_trials=20, budget_s=40, device_time=False)
    del tr
    rows.append(dict(name=zc.TorchTrainer.name, stage="-", ms=cmp.timings["pytorch"].median_ms, peak=peak(torch_make)))
    for stage in range(4):
        ours_make = lambda s=stage: zc.StudentTrainer(zero, s, c, opt, 0, "cuda")  # noqa: E731
        fns, names = {}, {}
        ours = ours_make()
        fns["student"] = lambda b: ours.step(*b)
        if ds_ok.available:
            ds_make = lambda s=stage: zc.DeepSpeedTrainer(s, c, opt, 0, "cuda", mb)  # noqa: E731
            ds = ds_make()
            fns[ds.name] = lambda b: ds.step(*b)
            names["ds"] = ds.name
        cmp = timing.compare(fns, make_inputs, check, student="student", baseline=names.get("ds", "student"),
                             warmup=3, min_trials=10, max_trials=20, budget_s=60, device_time=False)
        del ours
        if ds_ok.available:
            del ds
        rows.append(dict(name=f"student ZeRO-{stage}", stage=stage, ms=cmp.timings["student"].median_ms,
                         peak=peak(ours_make), **({"ratio": cmp.ratio} if ds_ok.available else {})))
        if ds_ok.available:
            rows.append(dict(name=names["ds"], stage=stage, ms=cmp.timings[names["ds"]].median_ms, peak=peak(ds_make)))
    return rows


def _plot(rows: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import zero_common as zc  # on sys.path: run() put it there

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    parts = ("params", "grads", "optimizer_states")
    colors = {"params": "#4c72b0", "grads": "#dd8452", "optimizer_states": "#55a868"}
    for i, r in enumerate(rows):
        bottom = 0.0
        for p in parts:
            v = r["paper"][p] / 1e3
            ax1.bar(i - 0.2, v, 0.38, bottom=bottom, color=colors[p], label=p.replace("_", " ") if i == 0 else None)
            bottom += v
        for j, c in enumerate(r["census"]):
            ax1.plot(i + 0.2, c / 1e3, "k_", markersize=14, label="measured (each rank)" if i == 0 and j == 0 else None)
    ax1.set_xticks(range(len(rows)), [f"stage {r['stage']}" for r in rows])
    ax1.set_ylabel("kB per rank")
    ax1.set_title(f"Tiny GPT ({rows[0]['psi']:,} params), {CPU_WORLD} ranks: formula (bars) vs census")
    ax1.legend(fontsize=8)
    ns = [1, 2, 4, 8, 16, 32, 64]
    for psi, style in ((134e6, "-"), (7.5e9, "--")):
        for stage in range(4):
            ax2.plot(ns, [zc.paper_bytes(stage, psi, n)["total"] / 2**30 for n in ns], style, marker="o", markersize=3,
                     label=f"{psi / 1e9:g}B, stage {stage}", color=f"C{stage}")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("ranks N")
    ax2.set_ylabel("GiB per rank (model states)")
    ax2.set_title("The paper's formula: 134M (solid), 7.5B (dashed)")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "zero_memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(out: Path) -> int:
    sys.path.insert(0, str(SUITES_DIR / "zero"))
    import torch

    import zero_common as zc

    from ..impl import Modules

    print(one_line())
    mem = _memory_on_cpu(zc)
    print(f"\nmodel-state memory per rank, {CPU_WORLD} CPU ranks (gloo), tiny GPT with {mem[0]['psi']:,} parameters, bf16 + fp32 Adam:")
    print(f"  {'stage':>5} {'formula kB':>11} {'measured kB (ranks)':>28} {'memory() kB':>12} {'sent/step kB':>13} {'paper kB':>9}")
    for r in mem:
        cens = " ".join(f"{c / 1e3:.1f}" for c in r["census"])
        print(f"  {r['stage']:>5} {r['paper']['total'] / 1e3:>11.1f} {cens:>28} {sum(r['report'].values()) / 1e3:>12.1f} "
              f"{r['comm'] / 1e3:>13.1f} {r['paper_comm'] / 1e3:>9.1f}")
    result = dict(environment=describe(), memory=mem)
    if torch.cuda.is_available():
        base = baselines.get("deepspeed.zero")
        if not base.available:
            print(f"\nDeepSpeed not compared: {base.reason}")
        speed = _speed_on_gpu(zc, Modules("zero"))
        result["speed"] = speed
        cfg = zc.bench_config()
        print(f"\none GPU, bf16 + fp32 AdamW, {cfg['description'].split(':')[1].split(',')[0].strip()}, "
              f"batch {cfg['micro_batch']} x {cfg['seq_len']}:")
        print(f"  {'':34} {'ms/step':>8} {'peak GB':>8} {'DS/student':>11}")
        for r in speed:
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            print(f"  {r['name']:34} {r['ms']:>8.1f} {r['peak'] / 1e9:>8.2f} {ratio:>11}")
    else:
        print("\nno GPU: the speed comparison with DeepSpeed was not run")
    (out / "zero.json").write_text(json.dumps(result, indent=1, default=str))
    png = _plot(mem, out)
    print(f"\nwrote {out / 'zero.json'}" + (f" and {png}" if png else ""))
    return 0
