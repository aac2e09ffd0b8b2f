"""The allocate / free workload the speed test and the benchmark time."""
from __future__ import annotations

import random


def make_ops(n_ops: int, num_blocks: int, seed: int) -> list[tuple[str, int]]:
    """A program: ('alloc', k) takes k blocks; ('free', i) frees the i-th live group (any order)."""
    rng, groups, free, ops = random.Random(seed), [], num_blocks, []
    while len(ops) < n_ops:
        k = rng.randint(1, 4)
        if k <= free and (not groups or rng.random() < 0.5):
            ops.append(("alloc", k))
            groups.append(k)
            free -= k
        else:
            i = rng.randrange(len(groups))
            ops.append(("free", i))
            free += groups.pop(i)
    return ops


def run_ops(pool, ops) -> int:
    """Replay ops on any BlockPool with get_new_blocks / free_blocks; returns blocks in use at the end."""
    groups = []
    for op, x in ops:
        if op == "alloc":
            groups.append(pool.get_new_blocks(x))
        else:
            pool.free_blocks(groups.pop(x)[::-1])
    return sum(len(g) for g in groups)
