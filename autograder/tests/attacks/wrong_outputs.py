
# ---- attack: wrong_outputs (appended to the reference's kv_cache/attention.py) ---------------
# Not an attack, plausible wrong answers the checkers must name: the reference's attend, then
#   T=1 fp32: a NaN in the output        T=1 bf16: an inf
#   T=3 fp32: a cached output buffer     T=3 bf16: writes into its input q
#   T=9 fp32: returns its input q        T=9 bf16: a host MemoryError
_honest_attend = attend  # noqa: F821 - the reference's, defined above
_CACHED = {}


def attend(q, k, v, kv_valid, scale):
    out = _honest_attend(q, k, v, kv_valid, scale)
    case = (q.shape[2], q.dtype)
    if case == (1, torch.float32):  # noqa: F821
        out[0, 0, 0, 0] = float("nan")
    elif case == (1, torch.bfloat16):  # noqa: F821
        out[-1, -1, -1, -1] = float("inf")
    elif case == (3, torch.float32):  # noqa: F821
        buf = _CACHED.setdefault("out", torch.empty_like(out))  # noqa: F821
        return buf.copy_(out)
    elif case == (3, torch.bfloat16):  # noqa: F821
        q[..., 0] = 0
    elif case == (9, torch.float32):  # noqa: F821
        return q.copy_(out)
    else:
        bytearray(2**50)
    return out

