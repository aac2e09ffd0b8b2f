"""Training with ZeRO stages 0-3 gives the same parameters as single-process AdamW.

Each test runs the student's ZeroEngine on world_size ranks in the sandbox (gloo), each rank on
its own micro-batch, for 3 steps, and compares the gathered fp32 parameters with
torch.optim.AdamW on the concatenated global batch in one process. In fp32 the two differ
only by the order of the additions in the gradient mean; how far that can move the parameters
depends on the draw (Adam amplifies the rounding of gradients that cancel to about eps), so the
tolerance is measured on it: autograder.fixtures.zero.reorder_atol, typically 1e-7 to 1e-6. A wrong engine
is off by about lr = 2e-3 (a missing average, a skipped step) or lr * weight_decay * |param|.
"""
import pytest
import torch

from autograder.fixtures.ranks import SandboxRanks
from autograder.fixtures.zero import (RunSpec, assert_params_close, build_model, reference_params, reorder_atol,
                                      train_zero)


@pytest.mark.points(2)
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_matches_single_process_adamw(zero, seed, stage, world_size):
    """fp32, 3 steps: parameters equal single-process AdamW on the global batch (up to the
    reordering of fp32 additions, measured on the draw)."""
    spec = RunSpec(seed=seed, stage=stage, world_size=world_size)
    with SandboxRanks(world_size) as ranks:
        out = train_zero(ranks, spec)
    want = reference_params(spec)
    assert_params_close(out["params"], want, f"stage {stage}, {world_size} ranks, after 3 steps",
                        atol=reorder_atol(spec, want))
    for r, losses in enumerate(out["losses"][1:], 1):
        assert losses != out["losses"][0], \
            f"rank {r} reported the same losses as rank 0: every rank must train on its own micro-batch"


@pytest.mark.points(1)
@pytest.mark.parametrize("stage", [1, 2])
def test_parameter_without_gradient(zero, seed, stage):
    """A module the forward never runs (its .grad stays None, no hook fires: backward() reduces
    its group): its gradient counts as zeros, so AdamW still decays it, at stages 0-1 (copied into
    g.full_grad) and 2-3 (flattened), as _reduce_group's docstring says."""
    spec = RunSpec(seed=seed, stage=stage, world_size=2, model={"spare": 3})
    with SandboxRanks(2) as ranks:
        out = train_zero(ranks, spec)
    want = reference_params(spec)
    assert_params_close(out["params"], want, f"stage {stage}, a Linear the forward never uses (spare.weight and "
                        "spare.bias get no gradient: zeros, then decayed by AdamW), after 3 steps",
                        atol=reorder_atol(spec, want))


@pytest.mark.points(2)
def test_stage3_prefetch(zero, seed):
    """Stage 3 with prefetch=True (the next module's gather started early), 3 ranks, 4 steps: the
    same parameters as without it."""
    spec = RunSpec(seed=seed, stage=3, world_size=3, steps=4, prefetch=True)
    with SandboxRanks(3) as ranks:
        out = train_zero(ranks, spec)
    want = reference_params(spec)
    assert_params_close(out["params"], want, "stage 3 with prefetch, after 4 steps", atol=reorder_atol(spec, want))


@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [1, 3])
def test_bf16_with_fp32_master(zero, seed, stage):
    """bf16 parameters and gradients, fp32 master weights: with a learning rate (1e-4) below bf16's
    resolution of the weights, the master weights still move as fp32 AdamW's do. A master kept
    in bf16 (or rebuilt from the bf16 parameters) loses these updates."""
    spec = RunSpec(seed=seed, stage=stage, world_size=2, steps=4, dtype="bfloat16", lr=1e-4, eps=1e-8)
    with SandboxRanks(2) as ranks:
        got = train_zero(ranks, spec)["params"]
    ref = reference_params(spec)
    init = {n: p.detach().float() for n, p in build_model(spec.gpt, spec.seed).named_parameters()}
    num = den = 0.0
    assert type(got) is dict, f"gather_fp32_params() on rank 0 returned {type(got).__name__}, not a dict"
    for name in ref:
        assert name in got, f"gather_fp32_params() lacks {name}"
        assert got[name].dtype == torch.float32, f"{name}: master weights must be fp32, got {got[name].dtype}"
        moved, want = got[name] - init[name], ref[name] - init[name]
        num += float((moved - want).norm() ** 2)
        den += float(want.norm() ** 2)
    rel = (num / den) ** 0.5
    assert rel == rel and rel <= 0.35, (
        f"stage {stage}, bf16: the master weights moved {rel:.2f} (relative norm) away from fp32 AdamW's updates "
        "(at most 0.35): keep the master weights and Adam states in fp32 and update them from the fp32 values, "
        "not from the bf16 parameters")
