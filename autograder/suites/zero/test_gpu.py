"""GPU: the engine on CUDA (NCCL, one rank), and its speed against DeepSpeed ZeRO of the same stage.

Speed: ms per training step (forward, backward, step) of DeepSpeed over the student's, same
process, same GPU, interleaved, fresh batches per trial, on the 134M-parameter TinyGPT of
data/training/zero-gpt-134m.json in bf16 with fp32 AdamW (batch 8 x 512). Every timed step's
loss is checked, and afterwards both models' losses on a new batch must agree (they trained
on the same data from the same weights). Points per ratio: autograder/grading.toml
[assignments.zero.speed]. One GPU means world size 1: what is measured is each engine's own
overhead (flattening, hooks, copies, the optimizer), not the network.
"""
import gc
import math

import pytest
import torch

from autograder import baselines, timing
from autograder.checks import secret_seed

from zero_common import (GPTConfig, RunSpec, StudentTrainer, DeepSpeedTrainer, assert_params_close, batch,
                         bench_config, build_model, init_single_process_group, random_batch, reference_params,
                         zero_config)


@pytest.mark.gpu
@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [1, 3])
def test_cuda_matches_single_process_adamw(zero, seed, stage):
    """fp32 on CUDA over NCCL (one rank), 3 steps: parameters equal CPU AdamW's within 1e-5."""
    init_single_process_group("nccl")
    spec = RunSpec(seed=seed, stage=stage, world_size=1, micro_batch=4)
    eng = zero.engine.ZeroEngine(build_model(spec.gpt, seed, torch.float32, "cuda"), zero_config(zero, spec))
    for s in range(spec.steps):
        ids, tgt = batch(spec, s)
        loss = eng(ids.cuda(), tgt.cuda())
        eng.backward(loss)
        eng.step()
    got = {n: t.cpu() for n, t in eng.gather_fp32_params().items()}
    assert_params_close(got, reference_params(spec), f"CUDA stage {stage}", atol=1e-5, rel_norm=1e-4)


def _speed(zero, grade, stage: int):
    base = baselines.get("deepspeed.zero")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    init_single_process_group("nccl")
    cfg = bench_config()
    c, opt = GPTConfig(**cfg["model"]), cfg["optimizer"]
    seed = secret_seed() % 2**20
    ours = StudentTrainer(zero, stage, c, opt, seed, "cuda")
    ds = DeepSpeedTrainer(stage, c, opt, seed, "cuda", cfg["micro_batch"])
    gen = torch.Generator().manual_seed(seed + 1)
    limit = 2 * math.log(c.vocab_size)

    def make_inputs(trial):
        return random_batch(gen, c, cfg["micro_batch"], cfg["seq_len"], "cuda")

    def check(inp, loss):
        v = float(loss)
        assert math.isfinite(v) and 0 < v < limit, f"timed step: loss {v} (expected finite, about ln(vocab) = {limit / 2:.2f})"

    try:
        cmp = timing.compare({"student": lambda b: ours.step(*b), ds.name: lambda b: ds.step(*b)}, make_inputs, check,
                             student="student", baseline=ds.name, warmup=3, min_trials=8, max_trials=25, budget_s=60,
                             device_time=False)
        ids, tgt = make_inputs(0)
        a, b = ours.loss(ids, tgt), ds.loss(ids, tgt)
        assert abs(a - b) <= 0.02 * abs(b), (
            f"after the timed steps the student's model has loss {a:.4f} on a new batch, DeepSpeed's {b:.4f}: "
            "the same data from the same weights must train the same (within 2%)")
        timing.record(grade, cmp, "zero", f"vs_deepspeed_stage{stage}")
        print(cmp.describe())
    finally:
        del ours, ds
        gc.collect()
        torch.cuda.empty_cache()


@pytest.mark.speed
@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_speed_vs_deepspeed(zero, grade, stage):
    """ms per step against DeepSpeed ZeRO of the same stage, one GPU, bf16, 134M parameters, batch 8 x 512."""
    _speed(zero, grade, stage)
