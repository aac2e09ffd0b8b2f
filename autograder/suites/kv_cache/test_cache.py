"""KVCache: append for prefill and decode, views of the filled part, reset, overflow."""
import pytest
import torch

from autograder.checks import poison_
from autograder.remote.client import writable


def rand(rng, *shape):
    return torch.randn(*shape, generator=rng)


@pytest.mark.points(2)
def test_append_prefill_then_decode(kv, rng):
    """A prompt then single tokens: each append returns views equal to everything written so far."""
    b, h, d, n0 = 2, 3, 8, int(torch.randint(2, 12, (1,), generator=rng))
    cache = kv.cache.KVCache(b, h, 32, d, torch.float32, "cpu")
    assert cache.length == 0, "a new cache must have length 0"
    # unwritten slots are NaN (reading them shows up); the cache's buffers: the submission writes them
    cache.k, cache.v = writable(poison_(cache.k), poison_(cache.v))
    ks, vs = [rand(rng, b, h, n0, d)], [rand(rng, b, h, n0, d)]
    keys, values = cache.append(ks[0], vs[0])
    for step in range(6):
        want_k, want_v = torch.cat(ks, 2), torch.cat(vs, 2)
        assert cache.length == want_k.shape[2], f"length is {cache.length} after {want_k.shape[2]} tokens"
        for got, want, what in ((keys, want_k, "keys"), (values, want_v, "values"),
                                (cache.keys(), want_k, "keys()"), (cache.values(), want_v, "values()")):
            assert got.shape == want.shape, \
                f"{what} after {want.shape[2]} tokens: shape {list(got.shape)}, expected {list(want.shape)}"
            assert torch.equal(got, want), \
                f"{what} after {want.shape[2]} tokens differ from what was appended (written at the wrong slot?)"
        assert keys.data_ptr() == cache.k.data_ptr() and values.data_ptr() == cache.v.data_ptr(), \
            "append must return views of the cache buffers, not copies"
        filled_k, filled_v = cache.keys(), cache.values()
        assert filled_k.data_ptr() == cache.k.data_ptr() and filled_v.data_ptr() == cache.v.data_ptr(), \
            "kv_cache.py, KVCache.keys() / values(): expected views of the cache buffers (a slice), not copies"
        ks.append(rand(rng, b, h, 1, d))
        vs.append(rand(rng, b, h, 1, d))
        keys, values = cache.append(ks[-1], vs[-1])


@pytest.mark.points(1)
def test_reset_forgets_everything(kv, rng):
    """After reset() the next append starts at slot 0 and the views hold only the new tokens."""
    cache = kv.cache.KVCache(1, 2, 16, 4)
    # the test's own buffers (what the worker returns that views them comes back as a view of them)
    cache.k, cache.v = writable(poison_(cache.k), poison_(cache.v))
    old_k, old_v = cache.k, cache.v
    cache.append(rand(rng, 1, 2, 10, 4), rand(rng, 1, 2, 10, 4))
    cache.reset()
    assert cache.length == 0, "reset() must set length to 0"
    assert cache.k.data_ptr() == old_k.data_ptr() and cache.v.data_ptr() == old_v.data_ptr(), (
        "kv_cache.py, KVCache.reset(): expected the same k and v buffers after reset (keep the buffers, only "
        "length goes back to 0: a cache is allocated once and reused)")
    k, v = rand(rng, 1, 2, 3, 4), rand(rng, 1, 2, 3, 4)
    keys, values = cache.append(k, v)
    assert keys.shape[2] == 3 and torch.equal(keys, k) and torch.equal(values, v), \
        "after reset, append must write at slot 0 and return only the new tokens"


@pytest.mark.points(1)
def test_overflow_raises_and_leaves_cache_unchanged(kv, rng):
    """Filling exactly to max_len works; one token more raises CacheOverflowError and changes nothing."""
    cache = kv.cache.KVCache(1, 1, 8, 4)
    cache.append(rand(rng, 1, 1, 7, 4), rand(rng, 1, 1, 7, 4))
    keys, _ = cache.append(rand(rng, 1, 1, 1, 4), rand(rng, 1, 1, 1, 4))  # exactly full: fine
    before = keys.clone()
    with pytest.raises(kv.cache.CacheOverflowError):
        cache.append(rand(rng, 1, 1, 1, 4), rand(rng, 1, 1, 1, 4))
    assert cache.length == 8 and torch.equal(cache.keys(), before), "a failed append must leave the cache unchanged"
    cache.reset()
    with pytest.raises(kv.cache.CacheOverflowError):
        cache.append(rand(rng, 1, 1, 9, 4), rand(rng, 1, 1, 9, 4))
    assert cache.length == 0, "a failed append must leave the cache unchanged"
