"""Decode attention, fp32 and fp16, against a float64 reference: in Triton's interpreter on a
CPU, compiled on a GPU (the same tests).

Tolerances (autograder/checks.py): fp32 atol/rtol 1e-4, relative norm 1e-5; fp16 atol/rtol
2e-3, relative norm 2e-3. Caches hold NaN wherever no live token is, so reading past seq_len
fails. bf16 runs on the GPU only (the interpreter's tl.dot is wrong for bf16).
"""
import pytest
import torch

from autograder.checks import Unchanged, assert_close, poison_

from autograder.fixtures.paged_attention import make_case, reference
from autograder.remote.client import writable

CONFIGS = [(torch.float32, 64, 8), (torch.float16, 128, 16), (torch.float32, 128, 32), (torch.float16, 64, 32),
           (torch.float16, 64, 8)]
IDS = [f"{str(d).split('.')[-1]}-d{h}-b{b}" for d, h, b in CONFIGS]


def lengths(block_size, gen):
    """Ragged: 1 token, exactly one block, one block plus one, and a random non-multiple."""
    r = int(torch.randint(2 * block_size + 1, 5 * block_size, (1,), generator=gen))
    r += r % block_size == 0
    return [1, block_size, block_size + 1, r]


@pytest.mark.points(3)
@pytest.mark.parametrize("dtype,head_size,block_size", CONFIGS, ids=IDS)
def test_decode_matches_reference(pa, rng, device, dtype, head_size, block_size):
    """paged_attention_decode on ragged lengths, scattered blocks, GQA 4:1, into a NaN-poisoned out."""
    case = make_case(lengths(block_size, rng), 8, 2, head_size, block_size, dtype, device, gen=rng)
    out = writable(poison_(torch.empty_like(case.query)))  # the one tensor the call may write
    inputs = Unchanged(query=case.query, key_cache=case.key_cache, value_cache=case.value_cache,
                       block_tables=case.block_tables, seq_lens=case.seq_lens)
    got = pa.kernels.paged_attention_decode(case.query, case.key_cache, case.value_cache, case.block_tables,
                                            case.seq_lens, case.scale, out=out)
    assert got.data_ptr() == out.data_ptr(), "write into `out` when it is given, and return it"
    inputs.check(what="paged_attention_decode")
    assert_close(got, reference(case),
                 what=f"paged_attention_decode {IDS[CONFIGS.index((dtype, head_size, block_size))]}", dtype=dtype)


@pytest.mark.points(2)
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (8, 1), (6, 3)], ids=["mha", "group8", "group2"])
def test_query_head_to_kv_head_mapping(pa, rng, device, num_heads, num_kv_heads):
    """Query head h reads KV head h // (num_heads // num_kv_heads), for several group sizes."""
    case = make_case([5, 23, 16], num_heads, num_kv_heads, 64, 16, torch.float32, device, gen=rng)
    got = pa.kernels.paged_attention_decode(case.query, case.key_cache, case.value_cache, case.block_tables,
                                            case.seq_lens, case.scale)
    assert_close(got, reference(case), what=f"{num_heads} query heads over {num_kv_heads} KV heads")


@pytest.mark.points(2)
def test_large_logits_need_the_max_subtracted(pa, rng, device):
    """fp16 inputs with logits in the hundreds: exp() overflows unless the running max is subtracted."""
    case = make_case([40, 17], 8, 2, 64, 16, torch.float16, device, gen=rng, q_scale=25.0)
    ref = reference(case)
    got = pa.kernels.paged_attention_decode(case.query, case.key_cache, case.value_cache, case.block_tables,
                                            case.seq_lens, case.scale)
    assert_close(got, ref, what="large-logit fp16 decode", dtype=torch.float16)


@pytest.mark.points(3)
@pytest.mark.parametrize("num_splits", [1, 2, 3, 7])
def test_split_k_matches_reference(pa, rng, device, num_splits):
    """Split-K with 1-7 splits, sequences shorter than a split included (their extra splits hold no token)."""
    case = make_case([1, 50, 130, 97], 8, 2, 64, 16, torch.float32, device, gen=rng, q_scale=3.0)
    out = writable(poison_(torch.empty_like(case.query)))  # the one tensor the call may write
    inputs = Unchanged(query=case.query, key_cache=case.key_cache, value_cache=case.value_cache)
    got = pa.kernels.paged_attention_decode_split_k(case.query, case.key_cache, case.value_cache, case.block_tables,
                                                    case.seq_lens, case.scale, num_splits, case.max_seq_len, out=out)
    assert got.data_ptr() == out.data_ptr(), (
        "kernels.py, paged_attention_decode_split_k: write the combined output into `out` when it is given, and "
        "return it (the engine passes its own buffer, as for paged_attention_decode)")
    inputs.check(what="paged_attention_decode_split_k")
    assert_close(got, reference(case), what=f"split-K with {num_splits} splits")


@pytest.mark.points(1)
def test_dispatcher_and_split_choice(pa, rng, device):
    """paged_attention() gives the same answer; choose_num_splits splits few long sequences, never returns < 1."""
    case = make_case([300, 9], 8, 2, 64, 16, torch.float16, device, gen=rng)
    got = pa.kernels.paged_attention(case.query, case.key_cache, case.value_cache, case.block_tables, case.seq_lens,
                                     case.scale, case.max_seq_len)
    assert_close(got, reference(case), what="paged_attention()", dtype=torch.float16)
    choose = pa.kernels.choose_num_splits
    assert choose(1, 8, 16384, 132) > 1, "one 16k-token sequence on 132 SMs: 8 programs leave the GPU idle; split it"
    # the split branch of the dispatcher, taken on the CPU too (which counts 4 multiprocessors)
    assert choose(1, 2, 2048, 4) > 1, ("one 2048-token sequence with 2 KV heads on 4 multiprocessors (what the "
                                       "dispatcher counts on a CPU): 2 programs leave half of them idle; split it")
    long = make_case([2048], 8, 2, 64, 16, torch.float32, device, gen=rng)
    got = pa.kernels.paged_attention(long.query, long.key_cache, long.value_cache, long.block_tables, long.seq_lens,
                                     long.scale, long.max_seq_len)
    assert_close(got, reference(long), what="paged_attention() on one 2048-token sequence (the split-K branch)")
    for args in [(256, 8, 1024, 132), (1, 1, 1, 132), (3, 2, 100, 4)]:
        n = choose(*args)
        assert isinstance(n, int) and n >= 1, f"choose_num_splits{args} = {n!r}: need an int >= 1"


@pytest.mark.points(1)
def test_splits_keep_at_least_128_tokens(pa):
    """choose_num_splits keeps every split at least 128 tokens, two tiles (each split costs a partial
    output and a share of the reduction): short sequences are not split however idle the GPU is."""
    choose = pa.kernels.choose_num_splits
    for args in [(1, 1, 1, 132), (1, 8, 100, 132), (2, 8, 4096, 132), (1, 2, 2048, 4), (1, 1, 16384, 132)]:
        n = choose(*args)
        assert isinstance(n, int) and (n == 1 or n > 1 and args[2] / n >= 128), (
            f"kernels.py, choose_num_splits{args} = {n!r}: splits of {args[2] / max(n, 1):.0f} tokens; expected an "
            f"int >= 1, and when > 1, splits of at least 128 tokens of the {args[2]}")
