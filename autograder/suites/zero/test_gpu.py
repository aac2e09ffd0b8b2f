"""GPU: the engine on CUDA (NCCL), and its speed against DeepSpeed ZeRO of the same stage.

Speed: ms per training step (forward, backward, step) of DeepSpeed over the student's, same GPU,
interleaved, fresh batches per trial, on the 134M-parameter TinyGPT of
data/training/zero-gpt-134m.json in bf16 with fp32 AdamW (batch 8 x 512). The student's engine is
a rank in the sandbox, DeepSpeed a trusted worker process of the grader's; this process sends each
the same batch and times the request end to end (each side finishes its step on the GPU before it
answers: llmsys.training.train_step), so both pay the same round trip. Every timed step's loss is
checked, and afterwards both models' losses on a new batch must agree (they trained on the same
data from the same weights). Points per ratio: autograder/grading.toml [assignments.zero.speed].
One GPU means world size 1: what is measured is each engine's own overhead (flattening, hooks,
copies, the optimizer), not the network. Several GPUs: test_multigpu.py.
"""
import pytest
import torch

from autograder import baselines, timing
from autograder.checks import secret_seed
from autograder.fixtures.ranks import SandboxRanks
from autograder.fixtures.zero import (BaselineError, RunSpec, assert_params_close, bench_spec, check_timed_loss,
                                      make_engines, reference_params, train_zero)
from autograder.remote import client
from llmsys.training import random_batch


@pytest.mark.gpu
@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [1, 3])
def test_cuda_matches_single_process_adamw(zero, seed, stage):
    """fp32 on CUDA over NCCL (one rank), 3 steps: parameters equal CPU AdamW's within 1e-5."""
    spec = RunSpec(seed=seed, stage=stage, world_size=1, micro_batch=4)
    with SandboxRanks(1, "nccl") as ranks:
        out = train_zero(ranks, spec, device="cuda")
    assert_params_close(out["params"], reference_params(spec), f"CUDA stage {stage}", atol=1e-5, rel_norm=1e-4)


def _speed(grade, stage: int):
    base = baselines.get("deepspeed.zero")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    seed = secret_seed() % 2**20
    spec, cfg = bench_spec(stage, 1, seed)
    c, opt, mb, T = spec.gpt, cfg["optimizer"], cfg["micro_batch"], cfg["seq_len"]
    with SandboxRanks(1, "nccl") as ranks, client.trusted_worker() as tw:
        eng, training = make_engines(ranks, spec, "cuda")[0], ranks.training[0]
        try:
            fz = tw.import_module("autograder.fixtures.zero")
            fz.init_single_process_group("nccl")
            ds = fz.DeepSpeedTrainer(stage, cfg["model"], opt, seed, "cuda", mb)
            ds_name = ds.name
        except Exception as e:  # noqa: BLE001 - DeepSpeed's failure is not the student's
            pytest.skip(f"not graded here: baseline error: DeepSpeed ZeRO-{stage} did not start: "
                        f"{type(e).__name__}: {str(e)[:300]} | {tw.log_tail(600)}")
        gen = torch.Generator().manual_seed(seed + 1)

        def make_inputs(trial):
            return random_batch(gen, c, mb, T, "cpu")

        def deepspeed_step(b):
            try:
                return ds.step(*b)
            except Exception as e:  # noqa: BLE001
                raise BaselineError(f"{type(e).__name__}: {str(e)[:300]} | {tw.log_tail(600)}") from None

        def check(inp, loss):
            check_timed_loss(loss, c.vocab_size)

        try:
            cmp = timing.compare({"student": lambda b: training.train_step(eng, *b, "cuda"), ds_name: deepspeed_step},
                                 make_inputs, check, student="student", baseline=ds_name, warmup=3, min_trials=8,
                                 max_trials=25, budget_s=60, device_time=False)
            ids, tgt = make_inputs(0)
            a, b = training.eval_loss(eng, ids, tgt, "cuda"), ds.loss(ids, tgt)
        except BaselineError as e:
            pytest.skip(f"not graded here: baseline error: DeepSpeed ZeRO-{stage}: {e}")
    assert type(a) is float and abs(a - b) <= 0.02 * abs(b), (
        f"after the timed steps the student's model has loss {a!r} on a new batch, DeepSpeed's {b:.4f}: "
        "the same data from the same weights must train the same (within 2%)")
    timing.record(grade, cmp, "zero", f"vs_deepspeed_stage{stage}")
    print(cmp.describe())


@pytest.mark.speed
@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_speed_vs_deepspeed(zero, grade, stage):
    """ms per step against DeepSpeed ZeRO of the same stage, one GPU, bf16, 134M parameters, batch 8 x 512."""
    _speed(grade, stage)
