"""One ZeRO training run, launched the way users launch one (a bench, not a grade):

    torchrun --nproc-per-node 2 -m autograder.bench.zero_train --engine course --stage 3 [--impl solutions]
    torchrun --nproc-per-node 2 -m autograder.bench.zero_train --engine deepspeed --stage 3

Every rank builds the benchmark model (data/training/zero-gpt-134m.json, or --config), wraps it in
the course's ZeroEngine (the code of --impl, imported in this process) or DeepSpeed's engine at the
same stage (bf16 parameters and gradients, fp32 AdamW), and trains --steps steps on its own random
micro-batches. Measured on every rank: ms per step (CUDA events, median after --warmup steps), the
peak of allocated GPU memory, and the bytes each collective sends from this rank (ring volumes,
counted by wrapping torch.distributed's collectives before the engine is made). Rank 0 prints one
JSON line: {"engine", "stage", "world_size", "ms_per_step", "peak_bytes" [per rank], "sent_bytes"
[per rank per step], "psi", "loss"}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
import torch.distributed as dist

from llmsys.training import GPTConfig, bench_config, build_model, num_params, random_batch

# torch.distributed function -> (ring passes, which argument is the full tensor); list forms count the list
_COLLECTIVES = {"all_reduce": (2, 0), "all_gather_into_tensor": (1, 0), "reduce_scatter_tensor": (1, 1),
                "_all_gather_base": (1, 0), "_reduce_scatter_base": (1, 1), "broadcast": (1, 0), "reduce": (1, 0),
                "all_gather": (1, 0), "reduce_scatter": (1, 1)}


class CommMeter:
    """Bytes this rank sends per collective (ring algorithm), from the calls' arguments."""

    def __init__(self):
        import torch.distributed.distributed_c10d as c10d

        self.bytes = 0
        self.on = False
        for name, (passes, arg) in _COLLECTIVES.items():
            if hasattr(c10d, name):
                self._wrap(c10d, name, passes, arg)

    def _wrap(self, c10d, name, passes, arg):
        original, meter = getattr(c10d, name), self

        def wrapped(*args, **kwargs):
            if meter.on:
                t = args[arg] if len(args) > arg else next(v for v in kwargs.values()
                                                           if isinstance(v, (torch.Tensor, list)))
                full = (sum(x.numel() * x.element_size() for x in t) if isinstance(t, list)
                        else t.numel() * t.element_size())
                ws = dist.get_world_size(kwargs.get("group"))
                meter.bytes += passes * (full * (ws - 1) // ws)
            return original(*args, **kwargs)

        setattr(c10d, name, wrapped)
        if getattr(dist, name, None) is original:
            setattr(dist, name, wrapped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["course", "deepspeed"], required=True)
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--impl", default=None,
                    help="the course engine's code: assignments, solutions (default) or a folder")
    ap.add_argument("--config", default=None, help="a JSON like data/training/zero-gpt-134m.json")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    cfg = json.loads(open(a.config).read()) if a.config else bench_config()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl")
    meter = CommMeter()
    c, opt, mb, T = GPTConfig(**cfg["model"]), cfg["optimizer"], cfg["micro_batch"], cfg["seq_len"]
    seed = 0
    if a.engine == "course":
        from .. import impl

        os.environ[impl.ENV_VAR] = str(impl.resolve(a.impl or os.environ.get(impl.ENV_VAR) or "solutions"))
        zero = impl.Modules("zero")
        model = build_model(c, seed, torch.float32, "cuda")
        eng = zero.engine.ZeroEngine(model, zero.engine.ZeroConfig(
            stage=a.stage, lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"],
            dtype=torch.bfloat16))
        name = f"course ZeRO-{a.stage}"
    else:
        from ..fixtures.zero import DeepSpeedTrainer

        eng = DeepSpeedTrainer(a.stage, cfg["model"], opt, seed, "cuda", mb).engine
        import deepspeed

        name = f"DeepSpeed {deepspeed.__version__} ZeRO-{a.stage}"
    gen = torch.Generator().manual_seed(1000 + rank)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, loss = [], float("nan")
    torch.cuda.reset_peak_memory_stats()
    for step in range(a.warmup + a.steps):
        ids, tgt = random_batch(gen, c, mb, T, "cuda")
        meter.on = step >= a.warmup
        dist.barrier()
        start.record()
        out = eng(ids, tgt)
        eng.backward(out)
        eng.step()
        stop.record()
        stop.synchronize()
        loss = float(out.detach())
        if step >= a.warmup:
            times.append(start.elapsed_time(stop))
    meter.on = False
    mine = torch.tensor([statistics.median(times), torch.cuda.max_memory_allocated(), meter.bytes / a.steps],
                        dtype=torch.float64, device="cuda")
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    if rank == 0:
        rows = [e.tolist() for e in every]
        print(json.dumps(dict(engine=name, kind=a.engine, stage=a.stage, world_size=world,
                              ms_per_step=max(r[0] for r in rows), peak_bytes=[int(r[1]) for r in rows],
                              sent_bytes=[int(r[2]) for r in rows], psi=num_params(c), loss=loss,
                              tokens_per_step=world * mb * T)), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
