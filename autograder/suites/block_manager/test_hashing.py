"""hash_block_tokens: chained, deterministic, sensitive to every token and to the parent."""
import pytest

from autograder.remote.client import fresh_worker


@pytest.mark.points(1)
def test_chained_hashes(bm, rng):
    """Same inputs, same hash; a different token or parent, a different hash; 64-bit ints."""
    h = bm.hashing.hash_block_tokens
    toks = [int(x) for x in __import__("torch").randint(0, 50000, (16,), generator=rng)]
    a = h(None, toks)
    assert isinstance(a, int) and 0 <= a < 2**64, "a block hash is a non-negative 64-bit int"
    assert a == h(None, list(toks)), "hash must be deterministic"
    assert h(a, toks) != a and h(a, toks) != h(a + 1, toks), "the parent hash must change the hash"
    for i in (0, 7, 15):
        other = list(toks)
        other[i] += 1
        assert h(None, other) != a, f"changing token {i} must change the hash"
    assert h(None, toks[:8] + toks[8:]) == a and h(None, toks[1:] + toks[:1]) != a, "token order matters"


@pytest.mark.points(1)
def test_hash_is_stable_across_processes(bm):
    """The prefix cache may be shared by processes: Python's randomised hash() will not do."""
    want = (bm.hashing.hash_block_tokens(None, [1, 2, 3]), bm.hashing.hash_block_tokens(12345, [4, 5]))
    with fresh_worker() as w:  # a new Python process: it draws its own random str/bytes hash seed
        h = w.import_module("block_manager.hashing").hash_block_tokens
        got = (h(None, [1, 2, 3]), h(12345, [4, 5]))
    assert got == want, ("hash_block_tokens differs between processes (Python's hash() of a str or bytes is "
                         f"randomised per process): {got} in a new process, {want} in the test's own")
