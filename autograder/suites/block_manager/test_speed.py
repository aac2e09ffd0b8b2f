"""BlockPool throughput against vLLM's own BlockPool: 100,000 allocate/free operations.

Timed on the grading machine (a CPU workload, but graded only where the GPU suites run, on a
quiet dedicated machine, never as a wall-clock assert in CPU CI). Without vLLM's Python
package the comparison is not made and the test says so.
"""
import statistics
import time

import pytest

from autograder import baselines, config
from autograder.checks import secret_seed

from churn import make_ops, run_ops

N_OPS, NUM_BLOCKS = 100_000, 4096


@pytest.mark.speed
@pytest.mark.points(2)
def test_block_pool_throughput_vs_vllm(bm, grade):
    base = baselines.get("vllm.block_pool")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    ours = lambda n: bm.block_pool.BlockPool(n, enable_caching=False)  # noqa: E731
    times = {"student": [], "vllm": []}
    base_seed = secret_seed()  # a fresh operation sequence every run
    for trial in range(7):  # interleaved, fresh program per trial
        ops = make_ops(N_OPS, NUM_BLOCKS, seed=base_seed + trial)
        for name, make in (("student", ours), ("vllm", base.impl))[:: 1 if trial % 2 else -1]:
            pool = make(NUM_BLOCKS)
            t = time.perf_counter()
            left = run_ops(pool, ops)
            times[name].append(time.perf_counter() - t)
            assert pool.get_num_free_blocks() == NUM_BLOCKS - left, f"{name}: free-block count wrong after the run"
    ratio = statistics.median(times["vllm"]) / statistics.median(times["student"])
    frac = config.speed_scale("block_manager", "vs_vllm_block_pool").fraction(ratio)
    grade.extra["ratio"] = ratio
    grade.fraction(frac, f"{ratio:.2f}x {base.description} ({N_OPS} ops)")
