"""The model ZeRO trains, its batches, and the steps a rank runs: shared by the ZeRO assignment,
its tests (on both sides of the sandbox) and the benchmarks.

    from llmsys.training import GPTConfig, build_model, batch

    model = build_model(GPTConfig(), seed=0)            # fp32, on the CPU: the same weights everywhere
    ids, targets = batch(spec, step=0, rank=1)          # rank 1's micro-batch of step 0
    loss = model(ids, targets)                          # the mean cross-entropy

Each rank of a graded run is a process of its own in the grader's sandbox. The grader drives it
from outside, one request per phase (`init_process_group`, then `forward_backward` and the
engine's `step()` for every step), so that it can measure each rank's memory and traffic from
outside between the phases.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import DATA_DIR


# ---- the model ----------------------------------------------------------------------------------

@dataclass
class GPTConfig:
    vocab_size: int = 97
    max_len: int = 16
    d_model: int = 35       # odd sizes: the embeddings, head, LayerNorms and MLP output need padding on 2 or 3 ranks
    n_heads: int = 5
    n_layers: int = 2
    spare: int = 0          # > 0: a Linear(d_model, spare) the forward never uses; its gradients stay None


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv, self.proj = nn.Linear(c.d_model, 3 * c.d_model), nn.Linear(c.d_model, c.d_model)
        self.fc, self.out = nn.Linear(c.d_model, 4 * c.d_model), nn.Linear(4 * c.d_model, c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """A small GPT: token + position embeddings, pre-LN blocks, an untied head. forward(ids
    [batch, seq], targets [batch, seq]) returns the mean cross-entropy (a 0-d fp32 tensor). The
    GPU benchmark uses the same class at 134M parameters (data/training/zero-gpt-134m.json)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.tok, self.pos = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.max_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f, self.head = nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.vocab_size, bias=False)
        # A module a model holds but does not run this time (a branch not taken, a frozen head):
        # its parameters get no gradient; ZeRO counts them as zeros, so AdamW still decays them.
        self.spare = nn.Linear(c.d_model, c.spare) if c.spare else None

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x)).float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def build_model(c: GPTConfig | dict, seed: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> TinyGPT:
    """The model of `seed`: built on the CPU, so the initial weights are the same whatever the device."""
    c = GPTConfig(**c) if isinstance(c, dict) else c
    torch.manual_seed(seed)
    m = TinyGPT(c)
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


def batch(spec: RunSpec, step: int, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets), each [micro_batch, max_len] int64, of `step`: rank r's micro-batch, or the
    global batch [world_size * micro_batch, max_len] (rank None)."""
    c = spec.gpt
    g = torch.Generator().manual_seed(spec.seed * 1000 + step)
    ids = torch.randint(0, c.vocab_size, (spec.world_size * spec.micro_batch, c.max_len + 1), generator=g)
    if rank is not None:
        ids = ids[rank * spec.micro_batch:(rank + 1) * spec.micro_batch]
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def random_batch(gen: torch.Generator, c: GPTConfig, micro_batch: int, seq_len: int, device: str):
    ids = torch.randint(0, c.vocab_size, (micro_batch, seq_len + 1), generator=gen).to(device)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def bench_config() -> dict:
    """The GPU benchmark's model, batch and optimizer (data/training/zero-gpt-134m.json)."""
    return json.loads((DATA_DIR / "training" / "zero-gpt-134m.json").read_text())


# ---- what a rank runs (called by the grader, one request per phase) -----------------------------

def init_process_group(backend: str, rank: int, world_size: int, port: int, timeout_s: float = 120.0) -> None:
    """Join the run's process group (TCP rendezvous on the loopback); on CUDA, device `rank` of
    the visible ones. One thread per rank process: the grader runs world_size ranks on few cores."""
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


class HeldForward:
    """engine(ids, targets), with its autograd graph held until backward(): what a rank holds at
    the end of a forward (what autograd saved for the backward, and whatever the engine keeps
    gathered) can then be measured from outside the rank, between the two calls."""

    def __init__(self, engine, ids: torch.Tensor, targets: torch.Tensor):
        self.engine = engine
        self.loss = engine(ids, targets)

    def backward(self) -> float:
        """engine.backward(loss); the loss as a float. The graph is let go of."""
        self.engine.backward(self.loss)
        value = float(self.loss.detach())
        self.loss = None
        return value


def forward_backward(engine, ids: torch.Tensor, targets: torch.Tensor, device: str | None = None) -> float:
    """loss = engine(ids, targets); engine.backward(loss); the loss as a float."""
    if device is not None:
        ids, targets = ids.to(device), targets.to(device)
    return HeldForward(engine, ids, targets).backward()


def train_step(engine, ids: torch.Tensor, targets: torch.Tensor, device: str | None = None) -> float:
    """One whole step (forward, backward, optimizer step) on `device` (default: where ids are),
    finished on the GPU when it returns."""
    value = forward_backward(engine, ids, targets, device)
    engine.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value


@torch.no_grad()
def eval_loss(engine, ids: torch.Tensor, targets: torch.Tensor, device: str | None = None) -> float:
    if device is not None:
        ids, targets = ids.to(device), targets.to(device)
    return float(engine(ids, targets))


def warm_up(c: GPTConfig | dict, seed: int, micro_batch: int, dtype: torch.dtype = torch.bfloat16) -> None:
    """Two forward/backward passes of a plain copy of the model, then nothing kept: the process's
    allocator and torch's lazily made state reach the size this model's steps need, so that what
    a rank holds afterwards (its resident memory) is the engine's state, not the runtime's."""
    _return_freed_memory()
    c = GPTConfig(**c) if isinstance(c, dict) else c
    m = build_model(c, seed, dtype)
    g = torch.Generator().manual_seed(seed)
    for _ in range(2):
        ids, tgt = random_batch(g, c, micro_batch, c.max_len, "cpu")
        m(ids, tgt).backward()
    del m
    import gc

    gc.collect()


def _return_freed_memory() -> None:
    """Make glibc's malloc give every block of 64 kB or more its own mapping, returned to the system
    when freed (by default the threshold grows with what was freed, and freed memory stays in the
    process): a rank's resident memory then follows the tensors it holds."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 64 * 1024)    # M_MMAP_THRESHOLD (fixed from now on)
        libc.mallopt(-1, 128 * 1024)   # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: the measurement is coarser, not wrong
        pass


def run_collective(op: str, numel: int) -> None:
    """One collective over a bf16 tensor of numel elements (full size), made and freed here: the
    grader measures what the backend sends for it."""
    import torch.distributed as dist

    n = dist.get_world_size()
    full = torch.zeros(numel, dtype=torch.bfloat16)
    shard = torch.zeros(numel // n, dtype=torch.bfloat16)
    if op == "all_reduce":
        dist.all_reduce(full)
    elif op == "all_gather":
        dist.all_gather_into_tensor(full, shard)
    elif op == "reduce_scatter":
        dist.reduce_scatter_tensor(shard, full)
    elif op == "barrier":
        dist.barrier()
    else:
        raise ValueError(f"unknown collective {op!r}")
