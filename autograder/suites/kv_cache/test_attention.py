"""repeat_kv and attend against a float64 reference written head by head."""
import math

import pytest
import torch

from autograder.checks import Unchanged, assert_close, assert_not_reused


def reference_attend(q, k, v, kv_valid, scale):
    """Loops over heads: query head h reads KV head h // group; padding queries give zeros."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, T, D = q.shape
    S, group = k.shape[2], H // k.shape[1]
    out = torch.zeros(B, H, T, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                seen = [s for s in range(S - T + t + 1) if kv_valid is None or kv_valid[b, s]]
                if not seen:
                    continue
                kk, vv = k[b, h // group, seen], v[b, h // group, seen]
                w = torch.softmax(kk @ q[b, h, t] * scale, dim=0)
                out[b, h, t] = w @ vv
    return out


@pytest.mark.points(1)
@pytest.mark.parametrize("n_rep", [1, 2, 4])
def test_repeat_kv_head_mapping(kv, rng, n_rep):
    """Query head h must read KV head h // n_rep."""
    x = torch.randn(2, 3, 5, 4, generator=rng)
    out = kv.attention.repeat_kv(x, n_rep)
    assert list(out.shape) == [2, 3 * n_rep, 5, 4], f"shape {list(out.shape)}, expected [2, {3 * n_rep}, 5, 4]"
    for h in range(3 * n_rep):
        assert torch.equal(out[:, h], x[:, h // n_rep]), f"query head {h} must read KV head {h // n_rep} (GQA grouping)"


@pytest.mark.points(1)
@pytest.mark.parametrize("T", [1, 3, 9], ids=["decode", "chunk", "prefill"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_attend_matches_reference(kv, rng, T, dtype):
    """Causal GQA attention of the last T tokens over S, with left padding, in fp32 and bf16."""
    B, H, Hkv, S, D = 3, 8, 2, 9, 16
    q = torch.randn(B, H, T, D, generator=rng) * 2
    k = torch.randn(B, Hkv, S, D, generator=rng) * 2
    v = torch.randn(B, Hkv, S, D, generator=rng)
    pads = [0, 2, 5]  # row 2's first prefill queries see no key at all: their output must be 0
    kv_valid = torch.arange(S)[None, :] >= torch.tensor(pads)[:, None]
    # not 1/sqrt(D), the default of torch's scaled_dot_product_attention: attend must use `scale`
    scale = float(torch.empty(1).uniform_(0.5, 1.5, generator=rng)) / math.sqrt(D)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    inputs = Unchanged(q=q, k=k, v=v, kv_valid=kv_valid)
    got = kv.attention.attend(q, k, v, kv_valid, scale)
    inputs.check(got, what="attend")
    assert got.dtype == dtype, f"attend returned {got.dtype}, expected q's dtype {dtype}"
    want = reference_attend(q, k, v, kv_valid, scale)
    assert_close(got, want, what=f"attend(T={T}, S={S}, {dtype})", dtype=dtype)
    kept = got.clone()
    again = kv.attention.attend(q, k, v, None, scale)
    assert_close(again, reference_attend(q, k, v, None, scale), what="attend with kv_valid=None", dtype=dtype)
    assert_not_reused(got, kept, again, what="attend")


@pytest.mark.points(1)
def test_attend_bf16_scores_in_fp32(kv, rng):
    """bf16 inputs, sharp attention (scores of a few tens): the result equals the exact attention of
    those inputs up to the rounding of the output to bf16. Scores computed in bf16 lose their low
    bits (about 0.1 at a score of 30), which moves the softmax by several percent."""
    B, H, Hkv, S, D, T = 2, 4, 2, 64, 64, 4
    q = (torch.randn(B, H, T, D, generator=rng) * 4).bfloat16()
    k = (torch.randn(B, Hkv, S, D, generator=rng) * 4).bfloat16()
    v = torch.randn(B, Hkv, S, D, generator=rng).bfloat16()
    kv_valid = torch.arange(S)[None, :] >= torch.tensor([0, 9])[:, None]
    scale = 1 / math.sqrt(D)
    got = kv.attention.attend(q, k, v, kv_valid, scale)
    want = reference_attend(q, k, v, kv_valid, scale)
    # the output is a convex combination of v's rows: |out| <= max|v|, and rounding it to bf16 moves it
    # by at most half an ulp, 2^-8 of its size; fp32 accumulation adds about 1e-6
    bound = 2.0 ** -8 * float(v.abs().max()) + 1e-5
    err = float((got.double() - want).abs().max())
    assert err <= bound, (
        f"attend on bf16 inputs is off by {err:.4f} (at most {bound:.4f}, the bf16 rounding of the output): compute "
        "the scores q @ k^T and the softmax in float32 (q.float(), k.float()), and round to q's dtype only at the end")
