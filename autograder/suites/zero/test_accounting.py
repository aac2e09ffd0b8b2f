"""Memory per rank against the ZeRO paper's formulas, and bytes sent per step against its
communication analysis, both measured from outside the ranks (autograder/fixtures/ranks.py):
memory as each rank's resident memory after a backward (when gradients are held) over what it
held before the engine existed; traffic as the bytes through the sandbox's own loopback, all
ranks together. The engine's own reports (memory(), its Comm's byte count) must agree.

Mixed-precision Adam, K = 12, Psi parameters, N = 3 ranks (bf16):
    stage 0: (2 + 2 + K) Psi     stage 1: 2 Psi + 2 Psi + K Psi / N
    stage 2: 2 Psi + (2 + K) Psi / N                  stage 3: (2 + 2 + K) Psi / N
Traffic per rank per step (ring): stages 0-2: 2 (N-1)/N x 2 Psi bytes; stage 3: 1.5x that.
The model has 30M parameters, so that a rank's state (160 to 480 MB) dwarfs what the Python
runtime and the allocator move around (measured within 4 MB per rank after the warm-up).
"""
import functools

import pytest

from autograder.checks import seed_for_test
from autograder.fixtures.ranks import SandboxRanks
from autograder.fixtures.zero import (RING_PASSES, RunSpec, memory_parts, make_engines, measure_zero, paper_bytes,
                                      paper_collectives, paper_comm)
from llmsys import cdiv
from llmsys.training import GPTConfig, batch, num_params

WORLD = 3
MODEL = dict(d_model=645, n_heads=5, n_layers=6, max_len=16)  # 30M parameters; odd sizes pad on 3 ranks
MEMORY_TOLERANCE = 0.05      # resident memory within 5% of the paper's formula ...
MEMORY_SLACK = 8_000_000     # ... plus 8 MB: the runtime's own, twice the most measured
REPORT_TOLERANCE = 0.02      # the engine's Comm byte count within 2% of the paper's volume
COMM_TOLERANCE = 0.05        # loopback bytes within 5% of the paper's schedule at this backend's cost


@functools.lru_cache(maxsize=None)
def _run(stage: int, prefetch: bool = False) -> dict:
    """One run per stage, shared by the memory and the traffic test (a fresh seed per grading run)."""
    seed = seed_for_test(f"stage {stage}") % 2**20
    print(f"stage {stage} run seed: {seed}")
    spec = RunSpec(seed=seed, stage=stage, world_size=WORLD, steps=2, dtype="bfloat16", model=MODEL, prefetch=prefetch)
    with SandboxRanks(WORLD) as ranks:
        out = measure_zero(ranks, spec, warm_seed=seed + 1)
    return dict(out, psi=num_params(GPTConfig(**MODEL)))


@pytest.mark.points(2)
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_memory_per_rank(zero, stage):
    """Every rank's resident memory after backward is the paper's formula (within 5% + 8 MB), and
    the engine's memory() breakdown (params, grads, optimizer states) agrees with it."""
    run = _run(stage)
    psi = run["psi"]
    want = paper_bytes(stage, psi, WORLD)
    slack = MEMORY_TOLERANCE * want["total"] + MEMORY_SLACK
    print(f"stage {stage}: ranks hold {[round(m / 1e6, 1) for m in run['census']]} MB, the formula "
          f"{want['total'] / 1e6:.1f} MB (tolerance {slack / 1e6:.1f} MB)")
    assert not run["strays"], (
        f"stage {stage}: the ranks started other processes ({len(run['strays'])}); a rank's state must live in the "
        "rank, where its memory is measured")
    if run["scratch"] is not None:
        assert run["scratch"] <= MEMORY_SLACK, (
            f"stage {stage}: the ranks wrote {run['scratch'] / 1e6:.1f} MB to files (/tmp, /dev/shm) during the run; "
            "the model states must stay in memory (offloading them is ZeRO-Offload, another design)")
    for rank, (measured, rep) in enumerate(zip(run["census"], run["reports"])):
        assert abs(measured - want["total"]) <= slack, (
            f"stage {stage}, rank {rank}: holds {measured / 1e6:.1f} MB more after backward than before the engine "
            f"was made; the paper's formula gives {want['total'] / 1e6:.1f} MB (params {want['params'] / 1e6:.1f}, "
            f"grads {want['grads'] / 1e6:.1f}, optimizer {want['optimizer_states'] / 1e6:.1f}) for {psi:,} parameters "
            f"on {WORLD} ranks (tolerance {slack / 1e6:.1f} MB): "
            + ("is some state kept whole that this stage partitions, or a copy kept alive (the fp32 model, a "
               "gathered buffer, a gradient)?" if measured > want["total"] else
               "is some state missing (the fp32 master, Adam's moments), or kept in the wrong precision?"))
        for part in ("params", "grads", "optimizer_states"):
            assert abs(rep[part] - want[part]) <= MEMORY_TOLERANCE * want["total"], (
                f"stage {stage}, rank {rank}: memory().{part} = {rep[part] / 1e6:.2f} MB, the formula gives "
                f"{want[part] / 1e6:.2f} MB")
        total = sum(rep.values())
        assert abs(total - measured) <= slack, (
            f"stage {stage}, rank {rank}: memory() reports {total / 1e6:.1f} MB but the rank holds "
            f"{measured / 1e6:.1f} MB")


@pytest.mark.points(2)
def test_stage3_frees_each_unit_after_its_forward(zero):
    """Stage 3, at the end of a forward (its graph held for the backward): every rank holds its
    shards and at most one unit gathered, not the whole model (measured from outside, as above).
    Autograd saves what the backward needs, and a Linear's weight.t() is a view of the unit's
    gathered buffer: releasing the parameters (.data = empty) without freeing that buffer's
    storage keeps every unit gathered until the backward."""
    run = _run(3)
    psi = run["psi"]
    want = paper_bytes(3, psi, WORLD)["total"]
    unit = 2 * _largest_unit(MODEL)  # one unit gathered, in bf16
    slack = MEMORY_TOLERANCE * want + MEMORY_SLACK
    print(f"stage 3: ranks hold {[round(m / 1e6, 1) for m in run['forward_census']]} MB at the end of the forward; "
          f"the formula {want / 1e6:.1f} MB, one unit gathered {unit / 1e6:.1f} MB (tolerance {slack / 1e6:.1f} MB)")
    for rank, measured in enumerate(run["forward_census"]):
        assert measured <= want + unit + slack, (
            f"stage 3, rank {rank}: holds {measured / 1e6:.1f} MB at the end of the forward; its shards (the paper's "
            f"{want / 1e6:.1f} MB) and one unit gathered ({unit / 1e6:.1f} MB) are {(want + unit) / 1e6:.1f} MB "
            f"(tolerance {slack / 1e6:.1f} MB), the whole model gathered would add {2 * psi / 1e6:.1f} MB. "
            "engine.py, _release: autograd keeps views of the gathered buffer for the backward (a Linear saves "
            "weight.t()), so dropping the buffer does not free it; free its storage "
            "(g.flat.untyped_storage().resize_(0)) and gather into the same buffer again (_full_buffer)")


def _unit_numels(model: dict) -> list[int]:
    """Elements of each unit of GPT(model) as the engine groups it: the rest of the model (embeddings,
    final norm, head), then each block."""
    from llmsys.training import build_model

    m = build_model(GPTConfig(**model), seed=0)
    blocks = [sum(p.numel() for p in b.parameters()) for b in m.blocks]
    return [sum(p.numel() for p in m.parameters()) - sum(blocks), *blocks]


def _largest_unit(model: dict) -> int:
    """Elements of the largest unit of GPT(model), padded for WORLD ranks."""
    return max(cdiv(n, WORLD) * WORLD for n in _unit_numels(model))


@pytest.mark.points(1)
@pytest.mark.parametrize("stage,prefetch", [(0, False), (1, False), (2, False), (3, False), (3, True)],
                         ids=["0", "1", "2", "3", "3-prefetch"])
def test_communication_per_step(zero, stage, prefetch):
    """Bytes the ranks send per step through the sandbox's loopback are the paper's schedule at this
    backend's cost per collective (within 5%): stage 3 all-gathers the parameters twice, with or
    without prefetch (a prefetched gather replaces one, it does not add one); the engine's own Comm
    counts the paper's volume (within 2%)."""
    run = _run(stage, prefetch)
    n, psi_bytes = WORLD, 2 * run["psi"]
    paper = paper_comm(stage, psi_bytes, n)
    for rank, mine in enumerate(run["engine_comm_per_step"]):
        assert abs(mine - paper) <= REPORT_TOLERANCE * paper, (
            f"stage {stage}, rank {rank}: the engine's Comm counted {mine / 1e6:.2f} MB per step; the paper's "
            f"analysis gives {paper / 1e6:.2f} MB ({'3' if stage == 3 else '2'} x (N-1)/N x the bf16 parameters)")
    if run["wire_per_step"] is None:
        pytest.skip("not graded here: the ranks' traffic is counted on the sandbox's own loopback, and this "
                    "machine's isolation gives the worker no network namespace of its own (docs/grading.md)")
    cost = run["wire_per_pass"]  # loopback bytes per ring byte, per collective (gloo: reduce_scatter costs 2)
    schedule = paper_collectives(stage)
    want = sum(k * RING_PASSES[op] * cost[op] for op, k in schedule.items()) * n * psi_bytes * (n - 1) / n
    got = run["wire_per_step"]
    print(f"stage {stage}: {got / 1e6:.2f} MB per step on the loopback, expected {want / 1e6:.2f} MB; {cost}")
    plan = " + ".join(f"{k} x {op}" for op, k in schedule.items())
    assert abs(got - want) <= COMM_TOLERANCE * want, (
        f"stage {stage}: the {n} ranks sent {got / 1e6:.1f} MB per step through the loopback; the paper's schedule "
        f"({plan} over the bf16 parameters) costs {want / 1e6:.1f} MB on this backend (measured per collective: "
        + ", ".join(f"{op} {c:.2f}x the ring's bytes" for op, c in cost.items()) + "). "
        + ("More: a collective the stage does not need, or one over more than the parameters?" if got > want else
           "Less: a collective missing (stage 3 gathers the parameters again in backward)?"))



@pytest.mark.points(1)
def test_memory_report_counts_padding(zero, seed):
    """memory() after a backward, exactly, on the small model (odd sizes: most groups pad on 3
    ranks): what _init_state allocated, padding included ("Padding counts: it is allocated"), in
    bytes of the working dtype (bf16) and fp32. Each group (a block, and the rest of the model) of
    numel elements holds padded_numel = ceil(numel / 3) * 3 of them whole, padded_numel / 3 as a
    shard."""
    numels = _unit_numels({})  # the rest of the model one group, each block one
    padded = sum(cdiv(n, WORLD) * WORLD for n in numels if n)
    shard = padded // WORLD
    want = {0: dict(params=2 * padded, grads=2 * padded, optimizer_states=12 * padded),
            1: dict(params=2 * padded, grads=2 * padded, optimizer_states=12 * shard),
            2: dict(params=2 * padded, grads=2 * shard, optimizer_states=12 * shard),
            3: dict(params=2 * shard, grads=2 * shard, optimizer_states=12 * shard)}
    with SandboxRanks(WORLD) as ranks:
        for stage in range(4):
            spec = RunSpec(seed=seed, stage=stage, world_size=WORLD, steps=1, dtype="bfloat16")
            engines = make_engines(ranks, spec)
            ranks.map(lambda r: ranks.training[r].forward_backward(engines[r], *batch(spec, 0, r)), "forward/backward")
            reports = ranks.map(lambda r: memory_parts(engines[r].memory()), "memory()")
            for rank, rep in enumerate(reports):
                assert rep == want[stage], (
                    f"stage {stage}, rank {rank}: memory() after backward reports {rep}; expected {want[stage]}: "
                    f"{padded:,} elements padded ({sum(numels):,} parameters, each group padded to a multiple of "
                    f"{WORLD}), {shard:,} per shard, 2 bytes each in bf16 and 12 for the fp32 master and Adam's "
                    "moments. Padding counts: it is allocated. Stages 0, 1 hold every group's whole gradient "
                    "(g.full_grad) after backward, stages 2, 3 their shards; autograd's .grad tensors are freed")
