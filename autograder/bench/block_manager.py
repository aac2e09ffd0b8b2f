"""Block allocator benchmark: memory over time on the trace (paged vs naive, PNG) and BlockPool
throughput over 100,000 allocate/free operations against vLLM's BlockPool where importable,
else against the reference solution (and the table says which)."""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from .. import DATA_DIR, REPO_ROOT, baselines
from ..environment import describe, one_line
from ..impl import load

SLOTS, BLOCK, LIMIT = 2048 * 24, 16, 300


def _reference_pool():
    """The reference BlockPool, loaded under another name so it does not clash with the student's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reference_block_manager", REPO_ROOT / "solutions" / "block_manager" / "__init__.py",
        submodule_search_locations=[str(REPO_ROOT / "solutions" / "block_manager")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reference_block_manager"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("reference_block_manager.block_pool").BlockPool


def run(out: Path) -> int:
    from autograder.fixtures.churn import make_ops, run_ops

    from llmsys import simulate as sim

    mgr, pool = (load("block_manager", m) for m in ("kv_cache_manager", "block_pool"))
    trace = json.loads((DATA_DIR / "workloads" / "sharegpt_like.json").read_text())
    paged = sim.replay_paged(mgr.KVCacheManager, trace, SLOTS, BLOCK, limit=LIMIT)
    nv = sim.replay_naive(sim.NaiveAllocator, trace, SLOTS, limit=LIMIT)
    print(f"memory efficiency (live / reserved KV slots), {LIMIT} requests, {SLOTS} slots, block {BLOCK}:")
    print(f"  paged {paged.efficiency:6.1%}  max running {max(paged.running):4d}  preemptions {paged.preemptions}  "
          f"steps {len(paged.running)}")
    print(f"  naive {nv.efficiency:6.1%}  max running {max(nv.running):4d}  steps {len(nv.running)}")

    base = baselines.get("vllm.block_pool")
    contenders = {"student": lambda n: pool.BlockPool(n, enable_caching=False)}
    if base.available:
        contenders["vLLM BlockPool"] = base.impl
    elif (REPO_ROOT / "solutions").is_dir():
        contenders["reference solution"] = lambda n: _reference_pool()(n, enable_caching=False)
        print(f"vLLM BlockPool not compared: {base.reason}")
    else:  # the student edition: no reference to compare with
        print(f"vLLM BlockPool not compared: {base.reason}; the student's BlockPool is timed alone")
    times = {k: [] for k in contenders}
    for trial in range(7):
        ops = make_ops(100_000, 4096, seed=trial)
        for name, make in contenders.items():
            p = make(4096)
            t = time.perf_counter()
            run_ops(p, ops)
            times[name].append(time.perf_counter() - t)
    print("BlockPool throughput, 100,000 allocate/free operations:")
    for name, ts in times.items():
        print(f"  {name:20} {statistics.median(ts) * 1e3:8.1f} ms   {1e5 / statistics.median(ts) / 1e6:6.2f} M ops/s")
    env = describe()
    print(one_line(env))
    (out / "block_manager.json").write_text(json.dumps({
        "paged_efficiency": paged.efficiency, "naive_efficiency": nv.efficiency,
        "throughput_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}, "environment": env}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, tl, title in ((axes[0], paged, f"paged blocks ({paged.efficiency:.0%} used)"),
                              (axes[1], nv, f"max-length reservation ({nv.efficiency:.0%} used)")):
            ax.fill_between(range(len(tl.reserved_tokens)), tl.reserved_tokens, color="tab:red", alpha=0.3,
                            label="reserved")
            ax.fill_between(range(len(tl.live_tokens)), tl.live_tokens, color="tab:blue", alpha=0.7,
                            label="live tokens")
            ax.set(title=title, xlabel="decode step", ylabel="KV slots")
            ax.legend(loc="upper right")
        fig.suptitle(f"KV memory over time: {LIMIT} ShareGPT-like requests, {SLOTS} slots")
        fig.tight_layout()
        fig.savefig(out / "block_manager_memory.png", dpi=110)
        print(f"wrote {out / 'block_manager_memory.png'}")
    except ImportError:
        print("matplotlib is not installed: no plot")
    return 0
