"""Helpers of the ZeRO suite: the model, the multi-process runner, the references, and the
grader's own meters (a census of tensor memory, a count of bytes through torch.distributed).

Every multi-rank test spawns world_size fresh processes (gloo on CPU, a free port each time)
and joins them with a deadline, so a deadlock fails the test instead of hanging the grader.
A rank that raises ends the run at once, with that rank's traceback as the failure.
"""
from __future__ import annotations

import gc
import io
import os
import queue
import socket
import traceback
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.nn as nn
import torch.nn.functional as F

JOIN_TIMEOUT_S = 150  # one multi-rank run; a deadlock fails after this


# ---- the model ----------------------------------------------------------------------------------

@dataclass
class GPTConfig:
    vocab_size: int = 97
    max_len: int = 16
    d_model: int = 35       # odd sizes: the embeddings, head, LayerNorms and MLP output need padding on 2 or 3 ranks
    n_heads: int = 5
    n_layers: int = 2


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv, self.proj = nn.Linear(c.d_model, 3 * c.d_model), nn.Linear(c.d_model, c.d_model)
        self.fc, self.out = nn.Linear(c.d_model, 4 * c.d_model), nn.Linear(4 * c.d_model, c.d_model)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """A small GPT: token + position embeddings, pre-LN blocks, an untied head. forward(ids,
    targets) returns the mean cross-entropy. The GPU benchmark uses the same class at 134M
    parameters (data/models/zero-gpt-134m.json)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.tok, self.pos = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.max_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f, self.head = nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.vocab_size, bias=False)

    def forward(self, ids, targets):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x)).float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def build_model(c: GPTConfig, seed: int, dtype=torch.float32, device="cpu") -> TinyGPT:
    torch.manual_seed(seed)
    m = TinyGPT(c)  # on the CPU, so the initial weights are the same whatever the device
    with torch.no_grad():  # LayerNorm starts at (1, 0); perturb it so its gradients are not special
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.add_(0.1 * torch.randn_like(mod.weight))
                mod.bias.add_(0.1 * torch.randn_like(mod.bias))
    return m.to(device=device, dtype=dtype)


def num_params(c: GPTConfig) -> int:
    return sum(p.numel() for p in TinyGPT(c).parameters())


# ---- what one run is --------------------------------------------------------------------------

@dataclass
class RunSpec:
    """One training run: the same on every rank, and for the single-process reference."""
    seed: int
    stage: int = 1
    world_size: int = 2
    steps: int = 3
    micro_batch: int = 2      # sequences per rank per step
    dtype: str = "float32"
    lr: float = 2e-3
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-5         # near gradient magnitudes, so Adam is not blind to a gradient's scale
    weight_decay: float = 0.1
    prefetch: bool = False
    model: dict = field(default_factory=dict)

    @property
    def gpt(self) -> GPTConfig:
        return GPTConfig(**self.model)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def batch(spec: RunSpec, step: int, rank: int | None = None):
    """(ids, targets) of `step`: rank r's micro-batch, or the global batch (rank None)."""
    c = spec.gpt
    g = torch.Generator().manual_seed(spec.seed * 1000 + step)
    ids = torch.randint(0, c.vocab_size, (spec.world_size * spec.micro_batch, c.max_len + 1), generator=g)
    if rank is not None:
        ids = ids[rank * spec.micro_batch:(rank + 1) * spec.micro_batch]
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def reference_params(spec: RunSpec, per_rank: bool = False) -> dict[str, torch.Tensor]:
    """Single process, fp32, torch.optim.AdamW on the concatenated global batch; with per_rank,
    the same gradient summed from each rank's micro-batch in rank order (another legal order of
    the same additions, which is what a ZeRO engine computes)."""
    model = build_model(spec.gpt, spec.seed, torch.float64 if spec.dtype == "float64" else torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, eps=spec.eps,
                            weight_decay=spec.weight_decay, foreach=False)
    for s in range(spec.steps):
        if per_rank:
            for r in range(spec.world_size):
                ids, tgt = batch(spec, s, r)
                (model(ids, tgt) / spec.world_size).backward()
        else:
            ids, tgt = batch(spec, s)
            model(ids, tgt).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def reorder_atol(spec: RunSpec, want: dict[str, torch.Tensor]) -> float:
    """How far two correct fp32 runs may end apart when they add the same gradient terms in other
    orders (ranks, reduce-scatter rings, batch splits). A gradient's rounding error is a few ulps
    of the sum of |terms|; Adam divides it by sqrt(v) + eps, so where a gradient cancels to about
    eps (1e-5) that error is amplified about 1/(4 eps) times, and it compounds over the steps. How
    much this draw amplifies it is measured, not guessed: the reference computed in two orders
    (global batch; per rank, summed), times 8 for the orders a ring adds on top; never below 4
    ulps of the largest parameter (each step may round a parameter differently)."""
    other = reference_params(spec, per_rank=True)
    spread = max(float((want[n] - other[n]).abs().max()) for n in want)
    largest = max(float(p.abs().max()) for p in want.values())
    return max(8 * spread, 4 * largest * 2.0 ** -23)


def zero_config(zero, spec: RunSpec):
    return zero.engine.ZeroConfig(stage=spec.stage, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps,
                                  weight_decay=spec.weight_decay, dtype=spec.torch_dtype, prefetch=spec.prefetch)


# ---- the grader's meters ------------------------------------------------------------------------

_COLLECTIVES = {  # torch.distributed function -> (ring factor, which argument is the full tensor)
    "all_reduce": (2, 0), "all_gather_into_tensor": (1, 0), "reduce_scatter_tensor": (1, 1),
    "_all_gather_base": (1, 0), "_reduce_scatter_base": (1, 1), "broadcast": (1, 0),
}
_LISTS = ("all_gather", "reduce_scatter", "all_to_all", "scatter", "gather")  # each takes one list of per-rank tensors


class CommMeter:
    """Counts bytes each collective sends from this rank (ring algorithm), by wrapping
    torch.distributed's functions before the student's code is imported. It is the grader's
    measurement, independent of whatever the engine reports about itself."""

    def __init__(self):
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        self.bytes: dict[str, int] = {}
        self.enabled = True
        for name, (factor, arg) in _COLLECTIVES.items():
            self._wrap(dist, c10d, name, factor, arg)
        for name in _LISTS:
            self._wrap(dist, c10d, name, 1, None)

    def _wrap(self, dist, c10d, name, factor, arg):
        if not hasattr(c10d, name):
            return
        original = getattr(c10d, name)
        meter = self

        def wrapped(*args, **kwargs):
            if meter.enabled:
                ws = dist.get_world_size(kwargs.get("group"))
                if arg is None:  # list forms: the list (one tensor per rank) is the full tensor
                    lists = [a for a in (*args[:2], *kwargs.values()) if isinstance(a, (list, tuple))]
                    nbytes = sum(t.numel() * t.element_size() for t in (lists[0] if lists else ())
                                 if isinstance(t, torch.Tensor))
                else:
                    t = args[arg] if len(args) > arg else list(kwargs.values())[0]
                    nbytes = t.numel() * t.element_size()
                meter.bytes[name] = meter.bytes.get(name, 0) + factor * (nbytes * (ws - 1) // ws)
            return original(*args, **kwargs)

        setattr(c10d, name, wrapped)
        if getattr(dist, name, None) is original:
            setattr(dist, name, wrapped)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def tensor_census() -> int:
    """Bytes of every tensor storage this process holds (each storage once), found by walking the
    garbage collector's objects, gradients of parameters included. The grader's measurement of
    memory, independent of what the engine reports."""
    gc.collect()
    seen: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            if s.nbytes() and s.data_ptr():
                seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())

    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            add(obj)
            if obj.is_leaf and obj.requires_grad:
                add(obj.grad)
    return sum(seen.values())


def paper_bytes(stage: int, psi: int, n: int, k: int = 12) -> dict[str, float]:
    """Per-rank model-state memory of mixed-precision Adam (ZeRO paper, section 5): 2 bytes of
    bf16 parameters, 2 of gradients and K = 12 of fp32 master, momentum and variance per parameter."""
    p, g, o = 2 * psi, 2 * psi, k * psi
    if stage >= 1:
        o /= n
    if stage >= 2:
        g /= n
    if stage >= 3:
        p /= n
    return {"params": p, "grads": g, "optimizer_states": o, "total": p + g + o}


def paper_comm(stage: int, psi_bytes: int, n: int) -> float:
    """Bytes one rank sends per step (ring): DP and stages 1-2: 2 (N-1)/N x params; stage 3: 3 (N-1)/N x."""
    return (3 if stage == 3 else 2) * psi_bytes * (n - 1) / n


# ---- running world_size ranks ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn_name: str, rank: int, world_size: int, port: int, payload, results) -> None:
    import torch.distributed as dist

    from autograder import sandbox
    from autograder.impl import root

    sandbox.install(root(), None)  # the ranks run the submission too: the same guards as the suite's process
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=JOIN_TIMEOUT_S))
        out = globals()[fn_name](rank, world_size, payload)
        buf = io.BytesIO()  # plain bytes: tensors in a queue would be shared-memory handles that die with the rank
        torch.save(out, buf)
        results.put((rank, "ok", buf.getvalue()))
    except BaseException:  # noqa: BLE001 - the rank's failure is the test's failure message
        results.put((rank, "error", traceback.format_exc(limit=12)))
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


def run_ranks(fn_name: str, world_size: int, payload, timeout_s: float = JOIN_TIMEOUT_S, env: dict | None = None):
    """Run globals()[fn_name](rank, world_size, payload) on world_size spawned processes; return the
    results in rank order. Fails with the first rank's traceback, or names the ranks that did not
    finish by the deadline (a collective some ranks never reached: a deadlock)."""
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        procs = [ctx.Process(target=_entry, args=(fn_name, r, world_size, port, payload, results), daemon=True)
                 for r in range(world_size)]
        for p in procs:
            p.start()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    got: dict[int, object] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(world_size)) - set(got))
                raise AssertionError(f"ranks {missing} of {world_size} did not finish within {timeout_s:.0f} s: a deadlock "
                                     "(a collective that some ranks call and others do not, or in a different order) "
                                     "or a hang")
            try:
                rank, status, out = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in got]
                if dead:
                    raise AssertionError(f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode}) without a result")
                continue
            if status == "error":
                last = out.strip().splitlines()[-1] if out.strip() else "an error"
                if last.startswith("NotImplementedError: "):  # a stub: reported as "not implemented: ..."
                    raise AssertionError(f"not implemented: {last.split(': ', 1)[1]} (rank {rank} of {world_size})")
                raise AssertionError(f"rank {rank} of {world_size}: {last}\n{out}")
            got[rank] = torch.load(io.BytesIO(out), weights_only=False)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
    return [got[r] for r in range(world_size)]


# ---- rank workers (looked up by name in the child) -------------------------------------------------

def _load_zero():
    from autograder.impl import Modules

    return Modules("zero")


def train_zero(rank: int, world_size: int, spec: RunSpec) -> dict:
    """The student's engine: `steps` steps on this rank's micro-batches. Returns the final fp32
    parameters (rank 0), the grader's byte count per step, the engine's own count, the census
    of tensor memory after a backward, and the engine's memory report at that moment."""
    meter = CommMeter()  # bound before the student's code is imported
    zero = _load_zero()
    model = build_model(spec.gpt, spec.seed, torch.float32)
    eng = zero.engine.ZeroEngine(model, zero_config(zero, spec))
    del model
    meter.bytes.clear()
    losses, census, report = [], None, None
    for s in range(spec.steps):
        ids, tgt = batch(spec, s, rank)
        loss = eng(ids, tgt)
        losses.append(loss.item())
        eng.backward(loss)
        del loss
        if s == spec.steps - 1:  # the moment of most state: gradients held, before the step frees them
            census = tensor_census() - ids.untyped_storage().nbytes() - tgt.untyped_storage().nbytes()
            r = eng.memory()
            report = dict(params=r.params, grads=r.grads, optimizer_states=r.optimizer_states)
        eng.step()
    comm = dict(meter.bytes)
    engine_bytes = int(eng.comm.total_bytes)
    meter.enabled = False
    params = eng.gather_fp32_params()
    return dict(params=params if rank == 0 else None, comm=comm, comm_total=sum(comm.values()) / spec.steps,
                engine_comm_total=engine_bytes / spec.steps, census=census, report=report, losses=losses)


def train_deepspeed(rank: int, world_size: int, spec: RunSpec) -> dict:
    """Real DeepSpeed ZeRO of the same stage on the same model and micro-batches (fp32, torch AdamW)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    model = build_model(spec.gpt, spec.seed, torch.float32)
    cfg = {"train_micro_batch_size_per_gpu": spec.micro_batch, "gradient_accumulation_steps": 1,
           "gradient_clipping": 0.0,  # the default became 1.0 in DeepSpeed 0.19.3
           "optimizer": {"type": "AdamW", "params": {"lr": spec.lr, "betas": list(spec.betas), "eps": spec.eps,
                                                     "weight_decay": spec.weight_decay, "torch_adam": True}},
           "zero_optimization": {"stage": spec.stage}, "steps_per_print": 10**9, "wall_clock_breakdown": False}
    eng, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    for s in range(spec.steps):
        ids, tgt = batch(spec, s, rank)
        loss = eng(ids, tgt)
        eng.backward(loss)
        eng.step()
    params = list(model.parameters())
    if spec.stage == 3:
        with deepspeed.zero.GatheredParameters(params):
            out = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    else:
        out = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    return dict(params=out if rank == 0 else None, version=deepspeed.__version__)


def reduce_scatter_check(rank: int, world_size: int, payload) -> dict:
    """The student's Comm on known data: mean all-reduce and mean reduce-scatter."""
    zero = _load_zero()
    seed, n = payload
    g = torch.Generator().manual_seed(seed)
    per_rank = torch.randn(world_size, n * world_size, generator=g, dtype=torch.float64).float()
    comm = zero.comm.Comm()
    shard = torch.full((n,), float("nan"))
    comm.reduce_scatter_mean(shard, per_rank[rank].clone())
    full = per_rank[rank].clone()
    comm.all_reduce_mean_(full)
    return dict(shard=shard, full=full, bytes=dict(comm.bytes_sent), expected=per_rank.double().mean(0).float())


def deepspeed_env() -> dict:
    """Where DeepSpeed's JIT-built CPU op is cached (about 80 s to build the first time)."""
    from llmsys.models import cache_dir

    return {"DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(cache_dir() / "torch_extensions")}


def assert_params_close(got: dict, want: dict, what: str, atol: float, rel_norm: float = 1e-5) -> None:
    """Every parameter of `want` present in `got`, same shape, within atol (and a relative norm)."""
    from autograder.checks import assert_close

    assert got is not None, f"{what}: gather_fp32_params() returned nothing on rank 0"
    missing = sorted(set(want) - set(got))
    assert not missing, f"{what}: gather_fp32_params() lacks {missing[:4]} (it must name every parameter)"
    for name, w in want.items():
        assert_close(got[name].float(), w.float(), what=f"{what}: {name}", atol=atol, rtol=0, rel_norm=rel_norm)


# ---- one-GPU training steps: the student's engine, DeepSpeed, plain PyTorch ---------------------------

def bench_config() -> dict:
    import json

    from autograder import DATA_DIR

    return json.loads((DATA_DIR / "training" / "zero-gpt-134m.json").read_text())


def init_single_process_group(backend: str) -> None:
    """World size 1 in this process (what DeepSpeed does on one GPU), if nothing is initialised yet."""
    import torch.distributed as dist

    if not dist.is_initialized():
        port = free_port()
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                          LOCAL_WORLD_SIZE="1")
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


class _EngineTrainer:
    """A training step through an engine with DeepSpeed's interface: engine(batch), engine.backward, engine.step."""
    engine = None

    def step(self, ids, tgt) -> torch.Tensor:
        loss = self.engine(ids, tgt)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()

    def loss(self, ids, tgt) -> float:
        with torch.no_grad():
            return float(self.engine(ids, tgt))


class StudentTrainer(_EngineTrainer):
    name = "student"

    def __init__(self, zero, stage: int, c: GPTConfig, opt: dict, seed: int, device: str, prefetch: bool = False):
        model = build_model(c, seed, torch.float32, device)
        cfg = zero.engine.ZeroConfig(stage=stage, lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"],
                                     weight_decay=opt["weight_decay"], dtype=torch.bfloat16, prefetch=prefetch)
        self.engine = zero.engine.ZeroEngine(model, cfg)


class DeepSpeedTrainer(_EngineTrainer):
    name = "deepspeed"

    def __init__(self, stage: int, c: GPTConfig, opt: dict, seed: int, device: str, micro_batch: int):
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
        model = build_model(c, seed, torch.float32, device)
        cfg = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
               "gradient_clipping": 0.0, "bf16": {"enabled": True},
               "optimizer": {"type": "AdamW", "params": {"lr": opt["lr"], "betas": list(opt["betas"]), "eps": opt["eps"],
                                                         "weight_decay": opt["weight_decay"], "torch_adam": True}},
               "zero_optimization": {"stage": stage}, "steps_per_print": 10**9, "wall_clock_breakdown": False}
        self.engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
        self.name = f"DeepSpeed {deepspeed.__version__} ZeRO-{stage}"


class TorchTrainer:
    """No ZeRO, no DeepSpeed: fp32 parameters, bf16 autocast, torch.optim.AdamW (fused on CUDA)."""
    name = "PyTorch AdamW (autocast bf16)"

    def __init__(self, c: GPTConfig, opt: dict, seed: int, device: str):
        self.model = build_model(c, seed, torch.float32, device)
        self.device = device
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"],
                                     weight_decay=opt["weight_decay"], fused=device == "cuda")

    def step(self, ids, tgt) -> torch.Tensor:
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = self.model(ids, tgt)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def loss(self, ids, tgt) -> float:
        with torch.no_grad(), torch.autocast(self.device, dtype=torch.bfloat16):
            return float(self.model(ids, tgt))


def random_batch(gen: torch.Generator, c: GPTConfig, micro_batch: int, seq_len: int, device: str):
    ids = torch.randint(0, c.vocab_size, (micro_batch, seq_len + 1), generator=gen).to(device)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
