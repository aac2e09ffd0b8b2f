"""Several GPUs: ZeRO over NCCL, one rank per GPU, against single-process AdamW and against
DeepSpeed ZeRO of the same stage at the same world size, on 2 and on 4 GPUs. A test of N GPUs
uses the first N visible ones; with fewer it is "not graded here (needs N GPUs)". grade-all gives
each job one GPU unless told otherwise: `grade-all --gpus-per-job 2` (or 4) grades this tier
(docs/grading.md).

Speed: ms per training step of DeepSpeed over the student's, on N GPUs, the 134M-parameter TinyGPT
of data/training/zero-gpt-134m.json in bf16 with fp32 AdamW, 8 x 512 tokens per rank. The
student's ranks are workers in the sandbox, DeepSpeed's are trusted workers of the grader's; each
trial sends every rank its micro-batch and is timed here, end to end, until every rank has finished
its step on its GPU (llmsys.training.train_step). The two are interleaved, fresh batches per trial;
every timed loss is checked, and afterwards both models must give the same loss on a new batch.
Points per ratio: autograder/grading.toml [assignments.zero.speed].
"""
import pytest
import torch

from autograder import baselines, timing
from autograder.checks import secret_seed
from autograder.fixtures.ranks import SandboxRanks, TrustedRanks
from autograder.fixtures.zero import (BaselineError, RunSpec, assert_params_close, bench_spec, check_timed_loss,
                                      make_engines, reference_params, reorder_atol, train_zero)
from llmsys.training import random_batch


def _on_gpus(*cases):
    """(world, stage, ...) cases, each marked as needing `world` GPUs."""
    return [pytest.param(*c, marks=pytest.mark.gpus(c[0]), id=f"{c[0]}gpu-stage{c[1]}") for c in cases]


CASES = _on_gpus(*[(world, stage) for world in (2, 4) for stage in (1, 2, 3)])


@pytest.mark.gpu
@pytest.mark.points(2)
@pytest.mark.parametrize("world,stage", CASES)
def test_nccl_matches_single_process_adamw(zero, seed, world, stage):
    """fp32, N GPUs over NCCL, 3 steps: parameters equal single-process AdamW on the global batch
    (within 1e-5, or the spread of fp32 reduction orders measured on the draw if larger)."""
    spec = RunSpec(seed=seed, stage=stage, world_size=world, micro_batch=4)
    with SandboxRanks(world, "nccl") as ranks:
        out = train_zero(ranks, spec, device="cuda")
    want = reference_params(spec)
    assert_params_close(out["params"], want, f"stage {stage} on {world} GPUs", atol=max(1e-5, reorder_atol(spec, want)),
                        rel_norm=1e-4)
    assert len(set(map(tuple, out["losses"]))) == world, \
        f"two of the {world} ranks reported the same losses: each trains on its own micro-batch"


def _speed(grade, stage: int, world: int):
    base = baselines.get("deepspeed.zero")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    seed = secret_seed() % 2**20
    spec, cfg = bench_spec(stage, world, seed)
    c, opt, mb, T = spec.gpt, cfg["optimizer"], cfg["micro_batch"], cfg["seq_len"]
    with SandboxRanks(world, "nccl") as ranks:
        engines = make_engines(ranks, spec, "cuda")
        try:
            ds_ranks = TrustedRanks(world, "nccl")
            fz = ds_ranks.imports("autograder.fixtures.zero")
            ds = ds_ranks.map(lambda r: fz[r].DeepSpeedTrainer(stage, cfg["model"], opt, seed, "cuda", mb), "DeepSpeed")
            ds_name = f"DeepSpeed {base.version} ZeRO-{stage}, {world} GPUs"
        except Exception as e:  # noqa: BLE001 - DeepSpeed's failure is not the student's
            pytest.skip(f"not graded here: baseline error: DeepSpeed ZeRO-{stage} on {world} GPUs did not start: "
                        f"{str(e)[:400]}")
        with ds_ranks:
            gen = torch.Generator().manual_seed(seed + 1)

            def make_inputs(trial):
                return [random_batch(gen, c, mb, T, "cpu") for _ in range(world)]

            def student(b):
                return ranks.map(lambda r: ranks.training[r].train_step(engines[r], *b[r], "cuda"), "a timed step")

            def deepspeed(b):
                try:
                    return ds_ranks.map(lambda r: ds[r].step(*b[r]), "a timed step")
                except Exception as e:  # noqa: BLE001
                    raise BaselineError(str(e)[:400]) from None

            def check(inp, losses):
                for r, loss in enumerate(losses):
                    check_timed_loss(loss, c.vocab_size, f"timed step, rank {r}")

            try:
                cmp = timing.compare({"student": student, ds_name: deepspeed}, make_inputs, check, student="student",
                                     baseline=ds_name, warmup=3, min_trials=8, max_trials=25, budget_s=60,
                                     device_time=False)
                ids, tgt = make_inputs(0)[0]
                a = ranks.map(lambda r: ranks.training[r].eval_loss(engines[r], ids, tgt, "cuda"), "eval_loss")[0]
                b = ds_ranks.map(lambda r: ds[r].loss(ids, tgt), "eval loss")[0]
            except BaselineError as e:
                pytest.skip(f"not graded here: baseline error: DeepSpeed ZeRO-{stage} on {world} GPUs: {e}")
    assert type(a) is float and abs(a - b) <= 0.02 * abs(b), (
        f"after the timed steps the student's model has loss {a!r} on a new batch, DeepSpeed's {b:.4f}: "
        "the same data from the same weights must train the same (within 2%)")
    timing.record(grade, cmp, "zero", f"vs_deepspeed_{world}gpu_stage{stage}")
    print(cmp.describe())


@pytest.mark.speed
@pytest.mark.points(2)
@pytest.mark.parametrize("world,stage", CASES)
def test_speed_vs_deepspeed_multigpu(zero, grade, world, stage):
    """ms per step against DeepSpeed ZeRO of the same stage on N GPUs (NCCL), bf16, 134M
    parameters, 8 x 512 tokens per rank."""
    _speed(grade, stage, world)
