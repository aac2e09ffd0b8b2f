"""ZeroEngine: data-parallel training with ZeRO stages 0-3 over torch.distributed.

Every rank runs the same model on its own micro-batch. What each rank keeps, per parameter
(Psi parameters in all, N ranks, mixed precision: bf16 working copy, fp32 master and Adam):

    stage | params (bf16) | grads (bf16) | fp32 master + Adam m, v (K = 12 bytes)
      0   | full     2Psi | full    2Psi | full    12 Psi          plain data parallelism
      1   | full     2Psi | full    2Psi | shard   12 Psi / N      optimizer states partitioned
      2   | full     2Psi | shard 2Psi/N | shard   12 Psi / N      + gradients
      3   | shard 2Psi/N  | shard 2Psi/N | shard   12 Psi / N      + parameters

Parameters are handled in FlatParamGroups, one per module that owns parameters. This rank's
fp32 state is one flat tensor each (master, exp_avg, exp_avg_sq), the concatenation of its
shard of every group (stage 0: of every whole group), so the optimizer step is a handful of
large elementwise kernels. Each group's `master` etc. are views into those.

A step:
    loss = engine(batch...)       # stage 3: each module's parameters gathered just before its
                                  # forward, released right after
    engine.backward(loss)         # stage 3: gathered again before the module's backward;
                                  # stages 2, 3: each group's gradients reduce-scattered as soon
                                  # as they are complete, and the full gradients freed
    engine.step()                 # stages 0, 1: gradients reduced now; then AdamW on this
                                  # rank's shard and the updated parameters written back
                                  # (stages 1, 2: all-gathered)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .adamw import adamw_
from .comm import Comm
from .partition import FlatParamGroup


@dataclass
class ZeroConfig:
    stage: int = 1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    dtype: torch.dtype = torch.bfloat16  # working precision of parameters and gradients; master and Adam are fp32
    prefetch: bool = False               # stage 3: start gathering the next module's parameters early


@dataclass
class MemoryReport:
    """Bytes this rank holds, persistently, for the model's training state."""
    params: int
    grads: int
    optimizer_states: int  # fp32 master weights + Adam exp_avg + exp_avg_sq

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer_states


class ZeroEngine:
    def __init__(self, model: torch.nn.Module, config: ZeroConfig, group: dist.ProcessGroup | None = None):
        if config.stage not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {config.stage}")
        self.model = model
        self.config = config
        self.stage = config.stage
        self.comm = Comm(group)
        self.rank, self.world_size = self.comm.rank, self.comm.world_size
        self.device = next(model.parameters()).device
        self.step_count = 0
        self.groups = self._build_groups()
        self._group_of_module = {g.module_name: g for g in self.groups}
        self._init_state()
        self._order: list[FlatParamGroup] = []  # stage 3: groups in the order the first forward used them
        self._recording = True
        self._install_hooks()

    # ---- layout (given) -------------------------------------------------------------------

    def _build_groups(self) -> list[FlatParamGroup]:
        """One FlatParamGroup per module that owns trainable parameters directly."""
        groups, seen = [], {}
        for mname, module in self.model.named_modules():
            names, params = [], []
            for pname, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                full = f"{mname}.{pname}" if mname else pname
                if id(p) in seen:
                    raise ValueError(f"parameter {full} is the same tensor as {seen[id(p)]} (tied weights): "
                                     "this engine gives each parameter to one module; untie them")
                seen[id(p)] = full
                names.append(full)
                params.append(p)
            if params:
                groups.append(FlatParamGroup(mname, names, params, self.rank, self.world_size))
        return groups

    def _init_state(self) -> None:
        """Allocate this rank's state and point every parameter at its new home.

        Sets, for every group g: g.master, g.exp_avg, g.exp_avg_sq (fp32 views into the flat
        self.master / self.exp_avg / self.exp_avg_sq: the group's shard, or for stage 0 the whole
        padded group); stages 2, 3: g.grad_shard (working dtype, a view into self.grad_shards);
        stages 0-2: g.flat, the full working-precision buffer the parameters are views of;
        stage 3: g.param_shard (a view into self.param_shards) and every parameter's .data an
        empty tensor until it is gathered. The original full-size parameter storage must be let
        go (no other reference kept), or stage 3 saves nothing.
        """
        cfg, dev = self.config, self.device
        # BEGIN SOLUTION hint: size = padded_numel (stage 0) or shard_numel; master from g.flatten(fp32); p.data = ...
        sizes = [g.padded_numel if self.stage == 0 else g.shard_numel for g in self.groups]
        total = sum(sizes)
        self.master = torch.empty(total, dtype=torch.float32, device=dev)
        self.exp_avg = torch.zeros(total, dtype=torch.float32, device=dev)
        self.exp_avg_sq = torch.zeros(total, dtype=torch.float32, device=dev)
        self.grad_shards = torch.zeros(total, dtype=cfg.dtype, device=dev) if self.stage >= 2 else None
        self.param_shards = torch.empty(total, dtype=cfg.dtype, device=dev) if self.stage == 3 else None
        offset = 0
        for g, size in zip(self.groups, sizes):
            sl = slice(offset, offset + size)
            offset += size
            full32 = g.flatten([p.detach() for p in g.params], dtype=torch.float32, device=dev)
            g.master, g.exp_avg, g.exp_avg_sq = self.master[sl], self.exp_avg[sl], self.exp_avg_sq[sl]
            g.master.copy_(full32 if self.stage == 0 else g.shard(full32))
            if self.stage >= 2:
                g.grad_shard = self.grad_shards[sl]
            if self.stage == 3:
                g.param_shard = self.param_shards[sl]
                g.param_shard.copy_(g.master)
                for p in g.params:
                    p.data = torch.empty(0, dtype=cfg.dtype, device=dev)
            else:
                g.flat = full32.to(cfg.dtype)
                for p, view in zip(g.params, g.views(g.flat)):
                    p.data = view
            del full32
        # END SOLUTION

    # ---- hooks (given) ---------------------------------------------------------------------

    def _install_hooks(self) -> None:
        for g in self.groups:
            if self.stage >= 2:
                for p in g.params:
                    p.register_post_accumulate_grad_hook(lambda p, g=g: self._on_grad(g))
        if self.stage == 3:
            for mname, module in self.model.named_modules():
                if mname in self._group_of_module:
                    g = self._group_of_module[mname]
                    module.register_forward_pre_hook(lambda m, args, g=g: self._pre_forward(g))
                    module.register_forward_hook(lambda m, args, out, g=g: self._post_forward(g, out))

    def _pre_forward(self, g: FlatParamGroup) -> None:
        if self._recording and g not in self._order:
            self._order.append(g)
        self._gather(g)
        if self.config.prefetch and not self._recording:
            self._prefetch_after(g, +1)

    def _post_forward(self, g: FlatParamGroup, out) -> None:
        if torch.is_grad_enabled():
            # gather again just before this module's backward: a hook on its outputs' gradients
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.register_hook(lambda grad, g=g: self._pre_backward(g))
        self._release(g)

    def _pre_backward(self, g: FlatParamGroup) -> None:
        self._gather(g)
        if self.config.prefetch:
            self._prefetch_after(g, -1)

    def _prefetch_after(self, g: FlatParamGroup, direction: int) -> None:
        """Start the all-gather of the group that ran after (forward) or before (backward) g."""
        if g not in self._order:
            return
        i = self._order.index(g) + direction
        if 0 <= i < len(self._order):
            nxt = self._order[i]
            if nxt.flat is None and nxt.pending is None:
                flat = torch.empty(nxt.padded_numel, dtype=self.config.dtype, device=self.device)
                nxt.pending = (self.comm.all_gather(flat, nxt.param_shard, async_op=True), flat)

    def _on_grad(self, g: FlatParamGroup) -> None:
        """Stages 2, 3: called after each parameter's .grad is complete; reduce once the whole group is."""
        g.grads_ready += 1
        if g.grads_ready == len(g.params):
            self._reduce_group(g)

    # ---- stage 3: gather and release (you write) --------------------------------------------

    def _gather(self, g: FlatParamGroup) -> None:
        """Stage 3: make g's parameters whole. Nothing to do if g.flat is already set (gathered and
        not yet released). If a prefetch is in flight (g.pending = (work, flat)), wait for it
        instead of gathering again. Otherwise all-gather every rank's g.param_shard into a new
        flat [padded_numel] buffer (self.comm.all_gather). Then g.flat = that buffer and every
        parameter's .data = its view (g.views). Gather fresh every time: the shards change at
        every step."""
        # BEGIN SOLUTION hint: g.pending, then self.comm.all_gather(flat, g.param_shard); p.data = view
        if g.flat is not None:
            return
        if g.pending is not None:
            work, flat = g.pending
            work.wait()
            g.pending = None
        else:
            flat = torch.empty(g.padded_numel, dtype=self.config.dtype, device=self.device)
            self.comm.all_gather(flat, g.param_shard)
        g.flat = flat
        for p, view in zip(g.params, g.views(flat)):
            p.data = view
        # END SOLUTION

    def _release(self, g: FlatParamGroup) -> None:
        """Stage 3: free g's full parameters: every .data an empty tensor, g.flat = None."""
        # BEGIN SOLUTION
        for p in g.params:
            p.data = torch.empty(0, dtype=self.config.dtype, device=self.device)
        g.flat = None
        # END SOLUTION

    # ---- gradients (you write) ---------------------------------------------------------------

    def _reduce_group(self, g: FlatParamGroup) -> None:
        """Stages 2, 3: reduce-scatter the mean of g's gradients into g.grad_shard, then free the
        full gradients (every p.grad = None). Stage 3: release the parameters too, since the
        module's backward is done. A parameter with no gradient counts as zeros."""
        # BEGIN SOLUTION hint: g.flatten([p.grad ...], dtype=self.config.dtype); self.comm.reduce_scatter_mean
        full = g.flatten([p.grad for p in g.params], dtype=self.config.dtype, device=self.device)
        self.comm.reduce_scatter_mean(g.grad_shard, full)
        for p in g.params:
            p.grad = None
        g.grads_ready = len(g.params)  # reduced: a late hook must not reduce again
        if self.stage == 3:
            self._release(g)
        # END SOLUTION

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), then finish what the hooks did not: stages 2, 3 reduce every group
        whose parameters did not all receive a gradient, and stage 3 releases anything still
        gathered. Given."""
        loss.backward()
        if self.stage >= 2:
            for g in self.groups:
                if g.grads_ready < len(g.params):
                    self._reduce_group(g)
                g.grads_ready = 0
        if self.stage == 3:
            for g in self.groups:
                self._drop_pending(g)
                self._release(g)
        self._recording = False

    def _drop_pending(self, g: FlatParamGroup) -> None:
        if g.pending is not None:
            g.pending[0].wait()
            g.pending = None

    # ---- the step (you write) ------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step on this rank's shard, then the updated parameters back where forward
        reads them.

        1. Gradients, as one fp32 tensor shaped like self.master (this rank's part of every
           group, in group order): stage 0: all-reduce (mean) each group's flattened gradient;
           stage 1: reduce-scatter (mean) it; stages 2, 3: already in self.grad_shards.
           Stages 0, 1: then free the full gradients (p.grad = None).
        2. adamw_(self.master, grads, self.exp_avg, self.exp_avg_sq, self.step_count, ...).
        3. Write back, in the working dtype: stage 0: g.flat <- g.master; stages 1, 2: all-gather
           every rank's updated shard into g.flat; stage 3: g.param_shard <- g.master.
        """
        cfg = self.config
        self.step_count += 1
        # BEGIN SOLUTION hint: three parts, as the docstring numbers them
        if self.stage >= 2:
            grads = self.grad_shards.float()
        else:
            parts = []
            for g in self.groups:
                full = g.flatten([p.grad for p in g.params], dtype=cfg.dtype, device=self.device)
                if self.stage == 0:
                    parts.append(self.comm.all_reduce_mean_(full))
                else:
                    shard = torch.empty(g.shard_numel, dtype=cfg.dtype, device=self.device)
                    parts.append(self.comm.reduce_scatter_mean(shard, full))
                for p in g.params:
                    p.grad = None
            grads = torch.cat(parts).float()
        adamw_(self.master, grads, self.exp_avg, self.exp_avg_sq, self.step_count, lr=cfg.lr, beta1=cfg.betas[0],
               beta2=cfg.betas[1], eps=cfg.eps, weight_decay=cfg.weight_decay)
        del grads
        for g in self.groups:
            if self.stage == 0:
                g.flat.copy_(g.master)
            elif self.stage in (1, 2):
                self.comm.all_gather(g.flat, g.master.to(cfg.dtype))
            else:
                g.param_shard.copy_(g.master)
        # END SOLUTION

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    # ---- accounting and inspection ---------------------------------------------------------------

    def memory(self) -> MemoryReport:
        """Bytes this rank holds for parameters (working dtype), gradients (whatever is allocated
        now: full p.grad tensors for stages 0, 1; the grad shards for stages 2, 3) and optimizer
        states (fp32 master + exp_avg + exp_avg_sq). Padding counts: it is allocated."""
        # BEGIN SOLUTION hint: numel() * element_size() of what _init_state allocated, plus live p.grad
        def nbytes(t):
            return 0 if t is None else t.numel() * t.element_size()

        if self.stage == 3:
            params = nbytes(self.param_shards) + sum(nbytes(g.flat) for g in self.groups)
            grads = nbytes(self.grad_shards)
        else:
            params = sum(nbytes(g.flat) for g in self.groups)
            grads = nbytes(self.grad_shards) + sum(nbytes(p.grad) for g in self.groups for p in g.params)
        states = nbytes(self.master) + nbytes(self.exp_avg) + nbytes(self.exp_avg_sq)
        return MemoryReport(params, grads, states)
        # END SOLUTION

    @torch.no_grad()
    def gather_fp32_params(self) -> dict[str, torch.Tensor]:
        """Every parameter's fp32 master value, whole, by name (a collective: call on every rank).
        Given."""
        out = {}
        for g in self.groups:
            if self.stage == 0:
                full = g.master
            else:
                full = torch.empty(g.padded_numel, dtype=torch.float32, device=self.device)
                dist.all_gather_into_tensor(full, g.master.contiguous(), group=self.comm.group)
            for name, view in zip(g.names, g.views(full)):
                out[name] = view.clone()
        return out
