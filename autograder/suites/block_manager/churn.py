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


def as_script(ops) -> tuple[list[str], list[list]]:
    """The same program as a worker script (protocol `script`): one round trip for the whole run.
    Returns (methods, steps); a free takes the result of the allocation it frees, reversed."""
    live, steps = [], []  # live: the step index of each live group, in run_ops' order
    for op, x in ops:
        if op == "alloc":
            live.append(len(steps))
            steps.append([0, x])
        else:
            steps.append([1, {"r": live.pop(x), "rev": 1}])
    return ["get_new_blocks", "free_blocks"], steps


def expected_ids(ops, free_ids: list[int]) -> list[int]:
    """The block ids the program's allocations return, in order, for a pool whose free queue starts
    as `free_ids`: allocations take from the front, frees append to the back (in the order given)."""
    from collections import deque

    queue, groups, out = deque(free_ids), [], []
    for op, x in ops:
        if op == "alloc":
            g = [queue.popleft() for _ in range(x)]
            groups.append(g)
            out.extend(g)
        else:
            queue.extend(groups.pop(x)[::-1])
    return out


def check_ids(ops, got: list[int], valid: set[int]) -> str | None:
    """Why a transcript cannot be a correct run (an id handed out while still in use, or unknown)."""
    groups, in_use, pos = [], set(), 0
    for op, x in ops:
        if op == "alloc":
            g = got[pos:pos + x]
            pos += x
            if len(g) != x or any(b not in valid or b in in_use for b in g) or len(set(g)) != x:
                return f"allocation {len(groups)} returned {g}, not {x} distinct free blocks"
            in_use.update(g)
            groups.append(g)
        else:
            in_use.difference_update(groups.pop(x))
    return None if pos == len(got) else f"{len(got) - pos} block ids more than the program allocated"
