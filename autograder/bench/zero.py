"""ZeRO benchmark: memory per rank by stage (measured and the paper's formula, PNG) and, on GPUs,
step time, peak memory and bytes sent per rank of the course engine and DeepSpeed at each stage,
on 1 GPU and on every larger power of two this machine has.

Memory (CPU): the engine under test (--impl) trains the tiny GPT on 4 CPU ranks (gloo) at each
stage; each rank's tensors are counted after a backward, next to the paper's formula for the same
parameter count. The plot adds the formula at N = 1 to 64 ranks for the 134M benchmark model and
a 7.5B one (the paper's example).

GPUs: each configuration is launched as users launch one, `torchrun --nproc-per-node N -m
autograder.bench.zero_train` (see that file): bf16 with fp32 AdamW, the 134M-parameter GPT of
data/training/zero-gpt-134m.json, 8 x 512 tokens per rank. The benches run the code under test in
their own processes: they are for looking, not grading.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from .. import baselines
from ..environment import describe, one_line

CPU_WORLD = 4


def _cpu_rank(rank: int, world_size: int, spec) -> dict:
    """A rank of the CPU memory bench (run_trusted_ranks): the engine under test, in this process."""
    from ..impl import Modules
    from .zero_train import CommMeter
    from llmsys.training import batch, build_model

    meter = CommMeter()
    zero = Modules("zero")
    eng = zero.engine.ZeroEngine(build_model(spec.gpt, spec.seed), zero.engine.ZeroConfig(
        stage=spec.stage, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay,
        dtype=spec.torch_dtype))
    census = report = None
    for s in range(spec.steps):
        ids, tgt = batch(spec, s, rank)
        meter.on = True
        loss = eng(ids, tgt)
        eng.backward(loss)
        del loss
        if s == spec.steps - 1:
            census = _tensor_census() - ids.untyped_storage().nbytes() - tgt.untyped_storage().nbytes()
            r = eng.memory()
            report = dict(params=r.params, grads=r.grads, optimizer_states=r.optimizer_states)
        eng.step()
        meter.on = False
    return dict(census=census, report=report, comm=meter.bytes / spec.steps)


def _tensor_census() -> int:
    """Bytes of every tensor storage this process holds (each once), parameters' gradients included."""
    import torch

    gc.collect()
    seen: dict[int, int] = {}
    tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    for obj in tensors:
        for t in (obj, obj.grad if obj.is_leaf and obj.requires_grad else None):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                if st.nbytes() and st.data_ptr():
                    seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
    return sum(seen.values())


def _memory_on_cpu() -> list[dict]:
    from ..fixtures.ranks import run_trusted_ranks
    from ..fixtures.zero import RunSpec, paper_bytes, paper_comm
    from llmsys.training import num_params

    rows = []
    for stage in range(4):
        spec = RunSpec(seed=0, stage=stage, world_size=CPU_WORLD, steps=2, dtype="bfloat16")
        ranks = run_trusted_ranks(_cpu_rank, CPU_WORLD, spec)
        psi = num_params(spec.gpt)
        rows.append(dict(stage=stage, psi=psi, census=[r["census"] for r in ranks], report=ranks[0]["report"],
                         paper=paper_bytes(stage, psi, CPU_WORLD), comm=ranks[0]["comm"],
                         paper_comm=paper_comm(stage, 2 * psi, CPU_WORLD)))
    return rows


def _gpu_runs(impl: str, gpus: int) -> list[dict]:
    """Every stage of the course engine (0-3) and of DeepSpeed (1-3), on 1, 2, 4 ... GPUs."""
    ds = baselines.get("deepspeed.zero")
    if not ds.available:
        print(f"DeepSpeed not compared: {ds.reason}")
    sizes = [n for n in (1, 2, 4, 8) if n <= gpus]
    rows = []
    for n in sizes:
        for kind, stages in (("course", range(4)), ("deepspeed", range(1, 4) if ds.available else ())):
            for stage in stages:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                       "-m", "autograder.bench.zero_train", "--engine", kind, "--stage", str(stage), "--impl", impl]
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
                except subprocess.TimeoutExpired:
                    rows.append(dict(engine=f"{kind} ZeRO-{stage}", kind=kind, stage=stage, world_size=n,
                                     error="did not finish within 240 s"))
                    print(f"  {n} GPU(s), {kind} ZeRO-{stage}: did not finish within 240 s", flush=True)
                    continue
                line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
                if p.returncode != 0 or line is None:
                    err = [ln for ln in (p.stderr or "").splitlines() if "Error" in ln or "error" in ln]
                    rows.append(dict(engine=f"{kind} ZeRO-{stage}", kind=kind, stage=stage, world_size=n,
                                     error=(err[-1] if err else f"exit {p.returncode}")[:300]))
                    print(f"  {n} GPU(s), {kind} ZeRO-{stage}: failed: {rows[-1]['error']}", flush=True)
                    continue
                rows.append(json.loads(line))
                r = rows[-1]
                print(f"  {n} GPU(s), {r['engine']:28} {r['ms_per_step']:8.1f} ms/step  peak "
                      f"{max(r['peak_bytes']) / 1e9:6.2f} GB/rank  sent {max(r['sent_bytes']) / 1e6:8.1f} MB/rank/step",
                      flush=True)
    return rows


def _plot(rows: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..fixtures.zero import paper_bytes

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
            ax2.plot(ns, [paper_bytes(stage, psi, n)["total"] / 2**30 for n in ns], style, marker="o", markersize=3,
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


def _plot_gpus(rows: list[dict], out: Path) -> Path | None:
    """Peak GPU memory per rank by stage and world size, course engine and DeepSpeed, beside the
    paper's model-state formula."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..fixtures.zero import paper_bytes

    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    sizes = sorted({r["world_size"] for r in ok})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        for i, stage in enumerate(range(4)):
            for j, kind in enumerate(("course", "deepspeed")):
                r = next((r for r in ok if r["world_size"] == n and r["stage"] == stage and r["kind"] == kind), None)
                if r:
                    ax.bar(i + (j - 0.5) * 0.38, max(r["peak_bytes"]) / 2**30, 0.36, color=f"C{j}",
                           label=("course engine" if j == 0 else "DeepSpeed") if i == 1 else None)
            ax.plot(i, paper_bytes(stage, ok[0]["psi"], n)["total"] / 2**30, "k_", markersize=18,
                    label="model states (paper)" if i == 0 else None)
        ax.set_xticks(range(4), [f"stage {s}" for s in range(4)])
        ax.set_title(f"{n} GPU(s): peak memory per rank")
        ax.set_ylabel("GiB")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "zero_gpus.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(out: Path) -> int:
    import torch

    from ..impl import ENV_VAR

    impl = os.environ[ENV_VAR]  # set by bench.main

    print(one_line())
    mem = _memory_on_cpu()
    print(f"\nmodel-state memory per rank, {CPU_WORLD} CPU ranks (gloo), tiny GPT with {mem[0]['psi']:,} parameters, "
          "bf16 + fp32 Adam:")
    print(f"  {'stage':>5} {'formula kB':>11} {'measured kB (ranks)':>28} {'memory() kB':>12} {'sent/step kB':>13} "
          f"{'paper kB':>9}")
    for r in mem:
        cens = " ".join(f"{c / 1e3:.1f}" for c in r["census"])
        print(f"  {r['stage']:>5} {r['paper']['total'] / 1e3:>11.1f} {cens:>28} "
              f"{sum(r['report'].values()) / 1e3:>12.1f} "
              f"{r['comm'] / 1e3:>13.1f} {r['paper_comm'] / 1e3:>9.1f}")
    result = dict(environment=describe(), memory=mem)
    png = _plot(mem, out)
    if torch.cuda.is_available():
        print("\nGPUs: bf16 + fp32 AdamW, 134M-parameter GPT, 8 x 512 tokens per rank (torchrun):")
        result["gpus"] = rows = _gpu_runs(impl, torch.cuda.device_count())
        by = {(r["world_size"], r["kind"], r["stage"]): r for r in rows if "error" not in r}
        one = {(k, s): r for (n, k, s), r in by.items() if n == 1}
        print(f"\n  {'GPUs':>4} {'stage':>5} {'course ms':>10} {'DS ms':>8} {'DS/course':>9} "
              f"{'t1/tN (course, DS)':>22}")
        for (n, kind, stage), r in sorted(by.items()):
            if kind != "course":
                continue
            d = by.get((n, "deepspeed", stage))
            eff = lambda k, x: (f"{one[(k, stage)]['ms_per_step'] / x['ms_per_step']:.2f}"  # noqa: E731
                                if (k, stage) in one and x else "-")
            print(f"  {n:>4} {stage:>5} {r['ms_per_step']:>10.1f} {d['ms_per_step'] if d else float('nan'):>8.1f} "
                  f"{(d['ms_per_step'] / r['ms_per_step']) if d else float('nan'):>9.2f} "
                  f"{eff('course', r) + ', ' + eff('deepspeed', d):>22}")
        gpng = _plot_gpus(rows, out)
        if gpng:
            print(f"wrote {gpng}")
    else:
        print("\nno GPU: the GPU runs (course engine and DeepSpeed under torchrun) were not made")
    (out / "zero.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {out / 'zero.json'}" + (f" and {png}" if png else ""))
    return 0
