"""ZeroEngine: data-parallel training with ZeRO stages 0-3 over torch.distributed.

Every rank runs the same model on its own micro-batch. What each rank keeps, per parameter
(Psi parameters in all, N ranks, mixed precision: bf16 working copy, fp32 master and Adam):

    stage | params (bf16) | grads (bf16) | fp32 master + Adam m, v (K = 12 bytes)
      0   | full     2Psi | full    2Psi | full    12 Psi          plain data parallelism
      1   | full     2Psi | full    2Psi | shard   12 Psi / N      optimizer states partitioned
      2   | full     2Psi | shard 2Psi/N | shard   12 Psi / N      + gradients
      3   | shard 2Psi/N  | shard 2Psi/N | shard   12 Psi / N      + parameters

Parameters are handled in FlatParamGroups, one per unit as FSDP wraps a transformer: each
block of the model's nn.ModuleList, and the model itself for the rest (embeddings, final norm,
head). Every collective is per group, so a step makes a few dozen, not hundreds. This rank's
fp32 state is one flat tensor each (master, exp_avg, exp_avg_sq), the concatenation of its
shard of every group (stage 0: of every whole group), so the optimizer step is a handful of
large elementwise kernels. Each group's `master` etc. are views into those.

A step:
    loss = engine(batch...)       # stage 3: each module's parameters gathered just before its
                                  # forward, released right after
    engine.backward(loss)         # stage 3: gathered again before the module's backward;
                                  # every stage: each group's gradients start their reduction
                                  # (stage 0 all-reduce, stages 1-3 reduce-scatter) as soon as
                                  # they are complete, while the backward goes on, and autograd's
                                  # .grad tensors are freed; backward returns once all are done
    engine.step()                 # AdamW on this rank's shard, the updated parameters written
                                  # back (stages 1, 2: all-gathered)

Overlapping the reductions with the backward is what DeepSpeed's `overlap_comm` and PyTorch's
DDP buckets do: the collective of the last layers' gradients runs while autograd computes the
first layers'. Without it, a step on N GPUs costs the backward plus every reduction.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .adamw import adamw_
from .comm import Comm, PendingMean
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
    # stages 2, 3: bytes of flattened gradients whose reduction may be in flight at once (each such
    # buffer lives until its reduction is done); past it, the backward waits for the oldest
    reduce_bytes_in_flight: int = 256 << 20


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
        # Reductions started in the backward and not yet waited for: (PendingMean, the buffer it
        # reads, if only it keeps that buffer alive). Only _track and _wait_reductions touch these.
        self._in_flight: deque[tuple[PendingMean, torch.Tensor | None]] = deque()
        self._bytes_in_flight = 0
        self._install_hooks()

    # ---- layout (given) -------------------------------------------------------------------

    def _build_groups(self) -> list[FlatParamGroup]:
        """One FlatParamGroup per unit, the way FSDP wraps a transformer: the model itself with
        every trainable parameter no block holds (embeddings, final norm, head), then each module
        held in an nn.ModuleList (a block: its attention, MLP and norms together), in order.

        Why units and not one group per Linear: every collective has a fixed cost (some 50-100
        microseconds to launch and synchronise the ranks). The 134M benchmark model has 76
        modules with parameters; reducing its gradients one module at a time took 5 ms on 4
        H200s, one collective for all of them 0.7 ms. Fourteen units keep the collectives few
        and still start the last blocks' reductions while the first blocks' backward runs."""
        units = []
        for lname, holder in self.model.named_modules():
            if isinstance(holder, torch.nn.ModuleList) and not any(lname.startswith(u + ".") for u, _ in units):
                units += [(f"{lname}.{i}" if lname else i, m) for i, m in holder.named_children()]
        in_unit = {id(p) for _, m in units for p in m.parameters()}
        rest = [(n, p) for n, p in self.model.named_parameters() if id(p) not in in_unit]
        groups, seen = [], {}
        for uname, named in [("", rest)] + [(u, [(f"{u}.{n}", p) for n, p in m.named_parameters()]) for u, m in units]:
            names, params = [], []
            for full, p in named:
                if not p.requires_grad:
                    continue
                if id(p) in seen:
                    raise ValueError(f"parameter {full} is the same tensor as {seen[id(p)]} (tied weights): "
                                     "this engine gives each parameter to one group; untie them")
                seen[id(p)] = full
                names.append(full)
                params.append(p)
            if params:
                groups.append(FlatParamGroup(uname, names, params, self.rank, self.world_size))
        return groups

    def _init_state(self) -> None:
        """Allocate this rank's state and point every parameter at its new home.

        Sets, for every group g: g.master, g.exp_avg, g.exp_avg_sq (fp32 views into the flat
        self.master / self.exp_avg / self.exp_avg_sq: the group's shard, or for stage 0 the whole
        padded group); stages 0, 1: g.full_grad, the group's whole gradient in the working dtype
        [padded_numel], zeros, a view into self.full_grads (one tensor for all groups, laid out
        group after group); stages 2, 3: g.grad_shard (working dtype, a view into
        self.grad_shards); stages 0-2: g.flat, the full working-precision buffer the parameters
        are views of;
        stage 3: g.param_shard (a view into self.param_shards) and every parameter's .data an
        empty tensor until it is gathered. The original full-size parameter storage must be let
        go (no other reference kept), or stage 3 saves nothing.
        """
        cfg, dev = self.config, self.device
        raise NotImplementedError(
            "zero: ZeroEngine._init_state (zero/engine.py): size = padded_numel (stage 0) or shard_numel; master from "
            "g.flatten(fp32); p.data = ...")

    # ---- hooks (given) ---------------------------------------------------------------------

    def _install_hooks(self) -> None:
        for g in self.groups:
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
                flat = self._full_buffer(nxt)
                nxt.pending = (self.comm.all_gather(flat, nxt.param_shard, async_op=True), flat)

    def _full_buffer(self, g: FlatParamGroup) -> torch.Tensor:
        """Stage 3: g's buffer for a gather [padded_numel], its memory allocated (again).

        Always the same tensor, g.unsharded: what autograd saves in the forward for the backward
        (a Linear saves its weight.t(), a view) shares its storage. Were every gather a new
        tensor, those saved views would keep each unit's gathered parameters alive until the
        backward: the whole model, gathered, at the end of every forward. _release frees the
        storage instead (resize to 0 bytes), which frees what the saved views hold too; the
        gather before the backward fills the same storage again, so they read the parameters."""
        if g.unsharded is None:
            g.unsharded = torch.empty(g.padded_numel, dtype=self.config.dtype, device=self.device)
        else:
            g.unsharded.untyped_storage().resize_(g.padded_numel * g.unsharded.element_size())
        return g.unsharded

    def _on_grad(self, g: FlatParamGroup) -> None:
        """Called after each parameter's .grad is complete; reduce once the whole group is."""
        g.grads_ready += 1
        if g.grads_ready == len(g.params):
            self._reduce_group(g)

    def _track(self, pending: PendingMean, buffer: torch.Tensor | None = None) -> None:
        """Keep a reduction started in the backward until backward() waits for it. `buffer`: the
        tensor it reads, if nothing else keeps it alive (stages 2, 3: the flattened gradients); it
        counts against config.reduce_bytes_in_flight, past which the oldest reductions are waited
        for now (their buffers freed)."""
        self._in_flight.append((pending, buffer))
        if buffer is not None:
            self._bytes_in_flight += buffer.numel() * buffer.element_size()
        while self._bytes_in_flight > self.config.reduce_bytes_in_flight and len(self._in_flight) > 1:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        pending, buffer = self._in_flight.popleft()
        pending.wait()
        if buffer is not None:
            self._bytes_in_flight -= buffer.numel() * buffer.element_size()

    def _wait_reductions(self) -> None:
        """Wait for every reduction in flight: their results are complete and means after this."""
        while self._in_flight:
            self._wait_oldest()

    # ---- stage 3: gather and release (you write) --------------------------------------------

    def _gather(self, g: FlatParamGroup) -> None:
        """Stage 3: make g's parameters whole. Nothing to do if g.flat is already set (gathered and
        not yet released). If a prefetch is in flight (g.pending = (work, flat)), wait for it
        instead of gathering again. Otherwise all-gather every rank's g.param_shard into
        self._full_buffer(g) (self.comm.all_gather). Then g.flat = that buffer and every
        parameter's .data = its view (g.views). Gather fresh every time: the shards change at
        every step."""
        raise NotImplementedError(
            "zero: ZeroEngine._gather (zero/engine.py): g.pending, then self.comm.all_gather(flat, g.param_shard); "
            "p.data = view")

    def _release(self, g: FlatParamGroup) -> None:
        """Stage 3: free g's full parameters: the gathered buffer's storage resized to 0 bytes
        (g.flat.untyped_storage().resize_(0): views autograd saved of it let go of the memory
        too, see _full_buffer), every .data an empty tensor, g.flat = None. Nothing to do if g is
        not gathered."""
        raise NotImplementedError(
            "zero: ZeroEngine._release (zero/engine.py): if g.flat is None: nothing; else resize its storage to 0, "
            "then .data and g.flat")

    # ---- gradients (you write) ---------------------------------------------------------------

    def _reduce_group(self, g: FlatParamGroup) -> None:
        """Start the reduction of the mean over ranks of g's gradients, without waiting for it
        (async_op=True; hand the PendingMean to self._track), and free autograd's gradients (every
        p.grad = None). A parameter with no gradient counts as zeros.

            stages 0, 1: copy the gradients into g.full_grad (through g.views), then stage 0
                all-reduces g.full_grad in place; stage 1 reduce-scatters it in place, into its
                own shard g.shard(g.full_grad). Nothing else keeps a buffer alive: _track(pending).
            stages 2, 3: flatten them into a new buffer and reduce-scatter it into g.grad_shard;
                _track(pending, that buffer). Stage 3: then release g's parameters too, since the
                module's backward is done.

        Called by the hooks once per group and step, or by backward() for a group some of whose
        parameters got no gradient; set g.grads_ready = len(g.params) so that no late hook reduces
        the group again."""
        raise NotImplementedError(
            "zero: ZeroEngine._reduce_group (zero/engine.py): stages 0, 1: view.copy_(p.grad) or zero_(); comm's "
            "async_op=True; self._track; p.grad = None")

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), then finish what the hooks did not: reduce every group whose
        parameters did not all receive a gradient, wait for every reduction in flight, and
        (stage 3) release anything still gathered. Given."""
        loss.backward()
        for g in self.groups:
            if g.grads_ready < len(g.params):
                self._reduce_group(g)
            g.grads_ready = 0
        self._wait_reductions()
        if self.stage == 3:
            for g in self.groups:
                self._drop_pending(g)
                self._release(g)
        self._recording = False

    def _drop_pending(self, g: FlatParamGroup) -> None:
        """A prefetch that no forward or backward used: wait for it, then free its buffer."""
        if g.pending is not None:
            work, flat = g.pending
            work.wait()
            flat.untyped_storage().resize_(0)
            g.pending = None

    # ---- the step (you write) ------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step on this rank's shard, then the updated parameters back where forward
        reads them.

        Group by group, for each g:
        1. Its mean gradient, reduced in the backward, in fp32, shaped like g.master: stage 0:
           g.full_grad; stage 1: its own shard of g.full_grad; stages 2, 3: g.grad_shard.
        2. adamw_(g.master, that gradient, g.exp_avg, g.exp_avg_sq, self.step_count, ...).
        3. Write back, in the working dtype: stage 0: g.flat <- g.master; stages 1, 2: all-gather
           every rank's updated shard into g.flat; stage 3: g.param_shard <- g.master.
        Why group by group: the fp32 gradient and AdamW's temporaries (sqrt, division) are each
        the size of what is updated at once. For this rank's whole shard that is 3 x 4 Psi / N
        bytes, most of the optimizer state's 12 Psi / N again; for one group, a block's share.
        """
        cfg = self.config
        self.step_count += 1
        raise NotImplementedError(
            "zero: ZeroEngine.step (zero/engine.py): for each group, the three parts the docstring numbers")

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    # ---- accounting and inspection ---------------------------------------------------------------

    def memory(self) -> MemoryReport:
        """Bytes this rank holds for parameters (working dtype), gradients (whatever is allocated
        now: self.full_grads for stages 0, 1, the grad shards for stages 2, 3, and any p.grad
        autograd holds) and optimizer states (fp32 master + exp_avg + exp_avg_sq). Padding
        counts: it is allocated."""
        raise NotImplementedError(
            "zero: ZeroEngine.memory (zero/engine.py): numel() * element_size() of what _init_state allocated, plus "
            "live p.grad")

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
