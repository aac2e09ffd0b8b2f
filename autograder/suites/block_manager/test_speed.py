"""BlockPool throughput against vLLM's own BlockPool: 100,000 allocate/free operations.

Both pools run the same program in workers (the student's in the sandbox, vLLM's in a trusted
process of its own), each as one request (`churn.as_script`), timed by this process's clock.
Every run's answer is the id of every block every allocation returned: the student's must be
exactly the free queue's order (front out, back in), vLLM's must be a valid run. Timed on the
grading machine (a CPU workload, but graded only where the GPU suites run, on a quiet dedicated
machine, never as a wall-clock assert in CPU CI). Without vLLM's Python package the comparison is
not made and the test says so.
"""
import array
import statistics
import time

import pytest

from autograder import config
from autograder.checks import secret_seed
from autograder.remote import client

from autograder.fixtures.churn import as_script, check_ids, expected_ids, make_ops

# grading.toml [assignments.block_manager.cases]
N_OPS, NUM_BLOCKS = (config.cases("block_manager")["block_pool"][k] for k in ("ops", "num_blocks"))
PLUCK = {"get_new_blocks": "block_id"}


def _run(pool, ops) -> tuple[float, list[int]]:
    methods, steps = as_script(ops)
    conn = object.__getattribute__(pool, "_r_conn")
    t = time.perf_counter()
    raw = conn.request("script", "the timed allocate/free program", handle_id=object.__getattribute__(pool, "_r_id"),
                       methods=methods, steps=steps, pluck=PLUCK)
    seconds = time.perf_counter() - t
    if type(raw) is not bytes or len(raw) % 8:
        raise AssertionError("the timed run answered with something else than its block ids")
    return seconds, array.array("q", raw).tolist()


@pytest.mark.speed
@pytest.mark.points(2)
def test_block_pool_throughput_vs_vllm(bm, grade):
    """100,000 allocate/free operations, the student's BlockPool against vLLM's, every block id handed out
    checked against the free queue's order; points by the time ratio (grading.toml)."""
    with client.trusted_worker() as bw:
        base = bw.import_module("autograder.baselines").get("vllm.block_pool")
        if not base.available:
            pytest.skip(f"not graded here: {base.reason}")
        description = base.description
        times = {"student": [], "vllm": []}
        base_seed = secret_seed()  # a fresh operation sequence every run
        for trial in range(7):  # interleaved, fresh program per trial
            ops = make_ops(N_OPS, NUM_BLOCKS, seed=base_seed + trial)
            for name in ("student", "vllm")[:: 1 if trial % 2 else -1]:
                if name == "student":
                    pool = bm.block_pool.BlockPool(NUM_BLOCKS, enable_caching=False)
                    seconds, ids = _run(pool, ops)
                    want = expected_ids(ops, list(range(NUM_BLOCKS)))
                    if ids != want:
                        at = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
                        raise AssertionError(
                            f"the timed run handed out block {ids[at] if at < len(ids) else None} as its "
                            f"{at}-th allocated block, where the free queue gives "
                            f"{want[at] if at < len(want) else None} "
                            "(get_new_blocks takes from the front, free_blocks appends to the back in the order given)")
                else:
                    pool = base.impl(NUM_BLOCKS)
                    free = pool.get_num_free_blocks()
                    seconds, ids = _run(pool, ops)
                    why = check_ids(ops, ids, set(range(NUM_BLOCKS + 1)))
                    if why or free < NUM_BLOCKS:
                        pytest.skip(f"not graded here: baseline error: {description}: "
                                    f"{why or f'{free} free blocks, not {NUM_BLOCKS}'}")
                times[name].append(seconds)
    ratio = statistics.median(times["vllm"]) / statistics.median(times["student"])
    frac = config.speed_scale("block_manager", "vs_vllm_block_pool").fraction(ratio)
    grade.extra["ratio"] = ratio
    grade.fraction(frac, f"{ratio:.2f}x {description} ({N_OPS} ops, both in workers)")
