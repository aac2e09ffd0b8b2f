"""reshape_and_cache: every new token lands in its slot, -1 slots are skipped, nothing else changes."""
import pytest
import torch

from autograder.remote.client import writable


@pytest.mark.points(2)
@pytest.mark.parametrize("dtype,block_size,head_size", [(torch.float32, 8, 64), (torch.float16, 16, 128),
                                                        (torch.float32, 32, 128)],
                         ids=["fp32-b8-d64", "fp16-b16-d128", "fp32-b32-d128"])
def test_writes_exactly_the_given_slots(pa, rng, device, dtype, block_size, head_size):
    """Every token's key and value land in its slot (slot 0 and the last slot included), -1 slots are
    skipped, and no other slot changes."""
    num_blocks, Hkv, T = 6, 2, 13
    kc = torch.full((num_blocks, block_size, Hkv, head_size), float("nan"), dtype=dtype)
    vc = kc.clone()
    n_slots = num_blocks * block_size
    slots = torch.randperm(n_slots - 2, generator=rng)[:T] + 1
    where = torch.randperm(T, generator=rng)
    slots[where[0]], slots[where[1]] = 0, n_slots - 1  # the first and the last slot are always live
    slots[where[2:5]] = -1  # padding tokens: skipped
    key = torch.randn(T, Hkv, head_size, generator=rng).to(dtype)
    value = torch.randn(T, Hkv, head_size, generator=rng).to(dtype)
    kc, vc, key, value, slots = (t.to(device) for t in (kc, vc, key, value, slots))
    pa.kernels.reshape_and_cache(key, value, *writable(kc, vc), slots)  # the caches: the call's output
    flat_k, flat_v = kc.view(-1, Hkv, head_size), vc.view(-1, Hkv, head_size)
    live = slots >= 0
    assert torch.equal(flat_k[slots[live]], key[live]), (
        "keys not at their slots (block = slot // block_size, offset = slot % block_size; slot 0 and the last slot "
        f"{n_slots - 1} are live slots, only -1 is padding)")
    assert torch.equal(flat_v[slots[live]], value[live]), "values not at their slots"
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool, device=device)
    untouched[slots[live]] = False
    assert torch.isnan(flat_k[untouched]).all() and torch.isnan(flat_v[untouched]).all(), \
        "slots that no token maps to (and tokens with slot -1) must not be written"


@pytest.mark.points(1)
def test_reshape_and_cache_strided_inputs(pa, rng, device):
    """key and value may be views with any token and head strides (only head_size must be
    contiguous, as reshape_and_cache checks): here slices of one [T, 2, kv heads + 1, head_size]
    tensor, so key.stride(0) is not num_kv_heads * head_size. Every token lands in its slot."""
    num_blocks, bs, Hkv, D, T = 4, 8, 2, 64, 9
    kv = torch.randn(T, 2, Hkv + 1, D, generator=rng)
    slots = torch.randperm(num_blocks * bs, generator=rng)[:T]
    kc = torch.full((num_blocks, bs, Hkv, D), float("nan"))
    vc = kc.clone()
    kv, kc, vc, slots = (t.to(device) for t in (kv, kc, vc, slots))
    key, value = kv[:, 0, 1:], kv[:, 1, :Hkv]  # strides (2 * 3 * D, D, 1): not contiguous per token
    pa.kernels.reshape_and_cache(key, value, *writable(kc, vc), slots)  # the caches: the call's output
    flat_k, flat_v = kc.view(-1, Hkv, D), vc.view(-1, Hkv, D)
    assert torch.equal(flat_k[slots], key) and torch.equal(flat_v[slots], value), (
        f"kernels.py, reshape_and_cache: key and value are views with strides {key.stride()} (not contiguous "
        "per token); expected each token's [num_kv_heads, head_size] at its slot: address the inputs with "
        "key.stride(0) / key.stride(1) (and value's), not num_kv_heads * head_size")
