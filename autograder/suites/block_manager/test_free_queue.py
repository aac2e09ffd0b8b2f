"""FreeKVCacheBlockQueue: order, O(1) removal from anywhere, links cleared."""
import pytest

from autograder import config, timing


def ids(q):
    return [b.block_id for b in q.get_all_free_blocks()]


@pytest.mark.points(2)
def test_queue_order_remove_append(bm):
    """popleft takes the front; remove works at head, middle and tail; append goes to the back."""
    blocks = [bm.block.KVCacheBlock(i) for i in range(6)]
    q = bm.block.FreeKVCacheBlockQueue(blocks)
    assert len(q) == 6 and ids(q) == [0, 1, 2, 3, 4, 5], \
        f"a new queue of blocks 0-5: ids {ids(q)}, len {len(q)}; expected them in the order given"
    first = q.popleft().block_id
    assert first == 0 and ids(q) == [1, 2, 3, 4, 5] and len(q) == 5, \
        f"popleft() gave block {first}, queue now {ids(q)} (len {len(q)}): " \
        "expected block 0 from the front, [1, 2, 3, 4, 5] left"
    q.remove(blocks[3])
    assert ids(q) == [1, 2, 4, 5] and len(q) == 4, "remove from the middle"
    q.remove(blocks[5])
    q.remove(blocks[1])
    assert ids(q) == [2, 4] and len(q) == 2, "remove the tail, then the head"
    for b in (blocks[0], blocks[5], blocks[3]):
        assert b.prev_free_block is None and b.next_free_block is None, \
            f"block {b.block_id} left the queue but keeps its links"
    q.append(blocks[5])
    q.append(blocks[0])
    assert ids(q) == [2, 4, 5, 0] and len(q) == 4, \
        f"append(5), append(0) to [2, 4]: queue {ids(q)}, expected [2, 4, 5, 0]"
    got = [q.popleft().block_id for _ in range(4)]
    assert got == [2, 4, 5, 0] and len(q) == 0, \
        f"popleft() four times gave {got} (len left {len(q)}), expected [2, 4, 5, 0] and 0"
    with pytest.raises(ValueError):
        q.popleft()
    q.append(blocks[1])
    assert ids(q) == [1] and q.popleft() is blocks[1], "append into an empty queue"


# The O(1) check: the same OPS calls on a free queue of SMALL and of LARGE blocks, the fastest of up to
# REPEATS rounds (a loaded machine only ever adds time); FACTOR: the slowdown per call allowed
# (grading.toml [assignments.block_manager.cases] free_queue says how it was chosen).
SMALL, LARGE, OPS, FACTOR = (config.cases("block_manager")["free_queue"][k]
                              for k in ("small", "large", "ops", "factor"))
REPEATS = 5


def _popleft_loop(q, n: int):
    """A function that calls q.popleft() n times in the worker, in one request (no block comes back),
    and returns the seconds it took."""
    import time

    from autograder.remote.client import Remote, method_handle

    fn = method_handle(q, "popleft")  # the bound method itself, not a call per q.popleft()
    if not isinstance(q, Remote):  # in-process mode: a plain object
        def run():
            t = time.perf_counter()
            for _ in range(n):
                fn()
            return time.perf_counter() - t
        return run
    loop, _, _ = timing.worker_loop(fn, [((), {})] * n, f"{n} popleft() calls")  # (two run now, untimed)

    def run():
        t = time.perf_counter()
        loop()
        return time.perf_counter() - t
    return run


def _timed_ops(bm, n: int) -> dict[str, float]:
    """Seconds per call of remove() (OPS blocks at the back of a free queue of n blocks), append() (the
    same blocks again) and popleft(): the first two as one request of OPS calls each, popleft as a loop
    of OPS calls run in the worker; every request's round trip is the same at every n."""
    import time

    from autograder.remote.client import call_each

    pool = bm.block_pool.BlockPool(n, enable_caching=False)
    mine = pool.get_new_blocks(OPS)   # the first OPS blocks go to the back of the queue: a remove() that
    pool.free_blocks(mine)            # searches from the front (list.remove, a walk) passes every other block
    q = pool.free_block_queue
    out = {}
    for name, argslist in (("remove", [(b,) for b in mine]), ("append", [(b,) for b in mine])):
        t = time.perf_counter()
        call_each(q, name, argslist)
        out[name] = (time.perf_counter() - t) / OPS
    out["popleft"] = _popleft_loop(q, OPS)() / OPS
    return out


@pytest.mark.points(1)
def test_queue_operations_do_not_walk_the_queue(bm, grade):
    """popleft, append and remove take about as long per call on a queue of 100,000 free blocks as on
    one of 4,000 (grading.toml): O(1), no walk or shift of the queue."""
    best: dict[int, dict[str, float]] = {SMALL: {}, LARGE: {}}
    for r in range(REPEATS):  # the fastest of a few rounds; a round without a slow operation ends it
        for n in (SMALL, LARGE):
            for op, s in _timed_ops(bm, n).items():
                best[n][op] = min(best[n].get(op, float("inf")), s)
        slow = {op: best[LARGE][op] / best[SMALL][op] for op in best[SMALL]
                if best[LARGE][op] > FACTOR * best[SMALL][op]}
        if not slow or (r >= 1 and min(slow.values()) > 2 * FACTOR):  # O(1), or clearly not
            break
    grade.extra["us_per_call"] = {str(n): {op: round(s * 1e6, 3) for op, s in d.items()} for n, d in best.items()}
    assert not slow, (
        "FreeKVCacheBlockQueue: " + ", ".join(
            f"{op}() takes {best[LARGE][op] * 1e6:.1f} us per call on {LARGE:,} free blocks, "
            f"{r:.0f}x its {best[SMALL][op] * 1e6:.1f} us on {SMALL:,}" for op, r in slow.items())
        + ": each operation must be O(1), relinking neighbours only, never walking or shifting the queue "
          "(a Python list's pop(0) and remove(), a deque's remove() are O(n))")
