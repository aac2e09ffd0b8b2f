"""GPU: the full correctness grid (bf16 included), and speed against vLLM's own kernels.

Speed: the student's paged_attention() against vLLM's CUDA paged_attention_v2 (vLLM <= 0.24)
or Triton unified_attention (vLLM >= 0.25), same GPU, same process, interleaved, L2 flushed,
fresh inputs per trial, each timed output checked on sampled sequences against an fp32
reference. Points per ratio: autograder/grading.toml [assignments.paged_attention.speed]
(full at 0.8x vLLM). Without vLLM the speed tests are "not graded here", with the reason.
"""
import statistics

import pytest
import torch

from autograder import baselines, timing
from autograder.checks import assert_close, poison_, secret_seed

from pa_bench import BLOCK_SIZE, GRID, HEAD_SIZE, NUM_KV_HEADS, gpu_case, sample_rows
from pa_common import make_case, naive_torch, reference

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.gpu
@pytest.mark.points(4)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16", "fp32"])
def test_gpu_correctness_grid(pa, rng, dtype):
    """Head 64/128 x block 8/16/32, ragged lengths incl. 1, decode, split-K and dispatcher, NaN-poisoned."""
    k = pa.kernels
    for head_size in (64, 128):
        for block_size in (8, 16, 32):
            lens = [1, block_size, block_size + 3, 300, int(torch.randint(2, 2000, (1,), generator=rng))]
            case = make_case(lens, 16, 4, head_size, block_size, dtype, device="cuda", gen=rng)
            want = reference(case, torch.float32)
            what = f"{str(dtype).split('.')[-1]} head {head_size} block {block_size}"
            args = (case.query, case.key_cache, case.value_cache, case.block_tables, case.seq_lens, case.scale)
            out = poison_(torch.empty_like(case.query))
            assert_close(k.paged_attention_decode(*args, out=out), want, what=f"decode {what}", dtype=dtype)
            for splits in (2, 5):
                out = poison_(torch.empty_like(case.query))
                got = k.paged_attention_decode_split_k(*args, splits, case.max_seq_len, out=out)
                assert_close(got, want, what=f"split-K x{splits} {what}", dtype=dtype)
            assert_close(k.paged_attention(*args, case.max_seq_len), want, what=f"paged_attention {what}", dtype=dtype)
        torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gpu_reshape_and_cache(pa, rng, dtype):
    """reshape_and_cache on CUDA with -1 slots, bf16 included."""
    kc = torch.full((64, 16, 8, 128), float("nan"), dtype=dtype, device="cuda")
    vc = kc.clone()
    T = 300
    slots = torch.randperm(64 * 16, generator=rng)[:T].cuda()
    slots[::7] = -1
    key = torch.randn(T, 8, 128, generator=rng).to(dtype).cuda()
    value = torch.randn(T, 8, 128, generator=rng).to(dtype).cuda()
    pa.kernels.reshape_and_cache(key, value, kc, vc, slots)
    live = slots >= 0
    assert torch.equal(kc.view(-1, 8, 128)[slots[live]], key[live]) and torch.equal(vc.view(-1, 8, 128)[slots[live]], value[live])
    assert int((~torch.isnan(kc)).view(-1, 8 * 128).all(1).sum()) == int(live.sum()), "slots beyond the given ones were written"


def _attention_speed(pa, grade, lens_fn, dtype):
    base = baselines.get("vllm.paged_attention")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    vllm = base.impl
    gen = torch.Generator().manual_seed(secret_seed())

    sizes = []  # KV bytes of each timed trial's draw

    def make_inputs(trial):
        case = gpu_case(lens_fn(gen), dtype, gen)
        if trial >= 0:
            sizes.append(case.kv_bytes)
        k_native, v_native = vllm.prepare(case.key_cache, case.value_cache)
        rows = sorted({0, len(case.seq_lens) - 1, int(torch.randint(0, len(case.seq_lens), (1,), generator=gen))})
        return case, k_native, v_native, rows, poison_(torch.empty_like(case.query)), poison_(torch.empty_like(case.query))

    def student(inp):
        case, *_, out_s, _ = inp
        return pa.kernels.paged_attention(case.query, case.key_cache, case.value_cache, case.block_tables,
                                          case.seq_lens, case.scale, case.max_seq_len, out=out_s)

    def vllm_fn(inp):
        case, kn, vn, _, _, out_v = inp
        return vllm(out_v, case.query, kn, vn, case.block_tables, case.seq_lens, case.scale, case.max_seq_len)

    def check(inp, out):
        case, rows = inp[0], inp[3]
        want = reference(sample_rows(case, rows), torch.float32)
        assert_close(out[rows], want, what="timed output (sampled sequences)", dtype=dtype)

    cmp = timing.compare({"student": student, "vllm": vllm_fn}, make_inputs, check, student="student", baseline="vllm",
                         warmup=3, min_trials=15, max_trials=60, budget_s=30, forbidden_kernels=r"vllm::")
    gbps = cmp.median_rate("student", sizes) / 1e9
    grade.extra.update(kv_bytes_median=statistics.median(sizes), student_gbps=gbps, baseline=base.description)
    timing.record(grade, cmp, "paged_attention", "vs_vllm_paged_attention")
    print(cmp.describe(), f"student {gbps:.0f} GB/s of KV")


@pytest.mark.speed
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name,lens_fn", GRID, ids=[g[0] for g in GRID])
def test_speed_vs_vllm_paged_attention(pa, grade, name, lens_fn, dtype):
    """Decode attention time against vLLM's kernel: 32 query / 8 KV heads, head 128, block 16."""
    _attention_speed(pa, grade, lens_fn, dtype)


@pytest.mark.speed
@pytest.mark.points(2)
@pytest.mark.parametrize("num_tokens", [256, 8192], ids=["decode-256", "prefill-8192"])
def test_speed_vs_vllm_reshape_and_cache(pa, grade, num_tokens):
    """reshape_and_cache against vLLM's reshape_and_cache_flash (same layout), fp16."""
    base = baselines.get("vllm.reshape_and_cache")
    if not base.available:
        pytest.skip(f"not graded here: {base.reason}")
    num_blocks = 4096

    def make_inputs(trial):
        kc = torch.empty(num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE, dtype=torch.float16, device="cuda")
        caches = [(kc, torch.empty_like(kc)), (torch.empty_like(kc), torch.empty_like(kc))]
        slots = torch.randperm(num_blocks * BLOCK_SIZE, device="cuda")[:num_tokens]
        key = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_SIZE, dtype=torch.float16, device="cuda")
        return key, torch.randn_like(key), caches, slots

    def student(inp):
        key, value, caches, slots = inp
        pa.kernels.reshape_and_cache(key, value, caches[0][0], caches[0][1], slots)
        return caches[0]

    def vllm_fn(inp):
        key, value, caches, slots = inp
        base.impl(key, value, caches[1][0], caches[1][1], slots)
        return caches[1]

    def check(inp, out):
        key, value, _, slots = inp
        assert torch.equal(out[0].view(-1, NUM_KV_HEADS, HEAD_SIZE)[slots], key)
        assert torch.equal(out[1].view(-1, NUM_KV_HEADS, HEAD_SIZE)[slots], value)

    cmp = timing.compare({"student": student, "vllm": vllm_fn}, make_inputs, check, student="student", baseline="vllm",
                         warmup=3, min_trials=20, max_trials=100, budget_s=20, forbidden_kernels=r"vllm::")
    timing.record(grade, cmp, "paged_attention", "vs_vllm_reshape_and_cache")
    print(cmp.describe())
