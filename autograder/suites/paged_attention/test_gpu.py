"""GPU: the full correctness grid (bf16 included), and speed against vLLM's own kernels.

Speed: the student's paged_attention() against the decode kernel vLLM itself runs on this GPU
(FlashAttention-3 on Hopper with vLLM installed; PagedAttention v2 where only vLLM's op library
of <= 0.24 is; autograder/baselines/vllm_kernels.py), same GPU; PagedAttention v2 is timed
beside FlashAttention where both are present. Both run in workers (the student's in its
sandbox, vLLM's in a trusted process of its own) and are timed by timing.compare_loops in this
process: back-to-back calls in one CUDA graph, fresh queries written on this process's clock,
cache copies rotated so no call finds its KV in L2, every call's output copied out when the clock
stops and checked (NaN-poisoned before; sampled sequences against an fp32 reference). Points per
ratio: autograder/grading.toml [assignments.paged_attention.speed] (full at 0.8x vLLM). Without
vLLM the speed tests are "not graded here", with the reason.
"""

import pytest
import torch

from autograder import timing
from autograder.checks import assert_close, poison_, secret_seed
from autograder.remote import client

from autograder.fixtures import pa_bench as pb
from autograder.fixtures.pa_bench import BLOCK_SIZE, GRID, HEAD_SIZE, NUM_HEADS, NUM_KV_HEADS, gpu_case
from autograder.fixtures.paged_attention import make_case, reference

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
            out = client.writable(poison_(torch.empty_like(case.query)))
            assert_close(k.paged_attention_decode(*args, out=out), want, what=f"decode {what}", dtype=dtype)
            for splits in (2, 5):
                out = client.writable(poison_(torch.empty_like(case.query)))
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
    pa.kernels.reshape_and_cache(key, value, *client.writable(kc, vc), slots)
    live = slots >= 0
    for name, cache, given in (("key_cache", kc, key), ("value_cache", vc, value)):
        wrong = int((cache.view(-1, 8, 128)[slots[live]] != given[live]).any(-1).any(-1).sum())
        assert wrong == 0, (f"{name}: {wrong} of {int(live.sum())} tokens are not their {dtype} value, bit for bit, "
                            "at slot_mapping[i] (a copy must not round or convert)")
    assert int((~torch.isnan(kc)).view(-1, 8 * 128).all(1).sum()) == int(live.sum()), \
        "slots beyond the given ones were written"


def _attention_speed(pa, grade, lens_fn, dtype):
    gen = torch.Generator().manual_seed(secret_seed())
    case = gpu_case(lens_fn(gen), dtype, gen)  # this process's copy: the reference reads it
    S = len(case.seq_lens)
    n = pb.calls_per_run(case.kv_bytes)
    copies = pb.cache_copies(case.key_cache)
    with client.trusted_worker() as bw:
        registry = bw.import_module("autograder.baselines")
        base = registry.get("vllm.paged_attention")
        if not base.available:
            pytest.skip(f"not graded here: {base.reason}")
        # the paper's kernel, timed beside what vLLM runs where both are installed (not graded)
        beside = registry.get("vllm.paged_attention_v2")
        primary = base.description  # e.g. "vLLM 0.26.0 FLASH_ATTN (FlashAttention-3)": the report names it
        names = ["student", primary] + (["paged_attention_v2"] if beside.available and "FLASH_ATTN" in primary
                                        else [])
        sides = {name: pb.SharedCase(case, n, copies) for name in names}
        vk = bw.import_module("autograder.baselines.vllm_kernels")

        def baseline_loop(name, impl):
            v = sides[name]
            return v.loop(vk.InLoop(impl, list(v.key_caches), list(v.value_caches)), lambda c, i: (
                (c.query[i], i % copies, c.block_tables, c.seq_lens, case.scale, case.max_seq_len, c.out[i]), {}))

        loops = {
            "student": sides["student"].loop(pa.kernels.paged_attention, lambda c, i: (
                (c.query[i], c.key_caches[i % copies], c.value_caches[i % copies], c.block_tables, c.seq_lens,
                 case.scale, case.max_seq_len), {"out": c.out[i]})),
            primary: baseline_loop(primary, base.impl),
        }
        if "paged_attention_v2" in sides:
            loops["paged_attention_v2"] = baseline_loop("paged_attention_v2", beside.impl)
        calibrate = timing.Loop(loops[primary].fn, [], loops[primary].write, loops[primary].outputs)
        check_gen = torch.Generator().manual_seed(secret_seed())

        def fresh(trial):  # the queries of every call of one run, drawn here, written on the clock
            return torch.randn(n, S, NUM_HEADS, HEAD_SIZE, generator=check_gen).to(dtype).cuda()

        def check(queries, name, copies_out):
            out = copies_out[0]  # [calls, num_seqs, num_heads, head_size]
            unwritten = ~torch.isfinite(out).flatten(2).all(-1)
            if bool(unwritten.any()):
                call, seq = (int(x) for x in unwritten.nonzero()[0])
                raise AssertionError(f"{name}: the timed output of call {call} has NaN for sequence {seq}: the call "
                                     f"did not write all of `out` before the GPU work it launched was done")
            # every call checked at a sequence drawn now, after the run, plus the first and last sequences
            picks = [(i, int(torch.randint(0, S, (1,), generator=check_gen))) for i in range(n)]
            picks = [picks[i] for i in torch.randperm(n, generator=check_gen)[:48].tolist()] + [(0, 0), (n - 1, S - 1)]
            calls_idx = torch.tensor([i for i, _ in picks], device="cuda")
            seq_idx = torch.tensor([s_ for _, s_ in picks], device="cuda")
            rows = pb.Case(queries[calls_idx, seq_idx], case.key_cache, case.value_cache, case.block_tables[seq_idx],
                           case.seq_lens[seq_idx], case.scale, case.max_seq_len)
            assert_close(out[calls_idx, seq_idx], reference(rows, torch.float32), dtype=dtype,
                         what=f"{name}: timed outputs (sampled calls and sequences)")

        cmp = timing.compare_loops(loops, fresh, check, student="student", baseline=primary, calibrate=calibrate,
                                   min_trials=8, max_trials=30, budget_s=30)
        description = primary
    gbps = case.kv_bytes / (cmp.timings["student"].median_ms * 1e-3) / 1e9
    grade.extra.update(kv_bytes=case.kv_bytes, calls_per_run=n, cache_copies=copies, student_gbps=gbps,
                       baseline=description)
    if "paged_attention_v2" in cmp.timings:
        grade.extra["vs_paged_attention_v2"] = (cmp.timings["paged_attention_v2"].median_ms
                                                / cmp.timings["student"].median_ms)
    # the thresholds depend on which kernel vLLM runs here (grading.toml says why)
    key = "vs_flash_attention" if "FLASH_ATTN" in description else "vs_paged_attention_v2"
    timing.record(grade, cmp, "paged_attention", key)
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
@pytest.mark.parametrize("num_tokens", [n for _, n in pb.RESHAPE_CASES], ids=[name for name, _ in pb.RESHAPE_CASES])
def test_speed_vs_vllm_reshape_and_cache(pa, grade, num_tokens):
    """reshape_and_cache against vLLM's reshape_and_cache_flash (same layout), fp16.

    Each call of a run writes its own slots (disjoint across the run's calls), so every call's
    writes are in the cache when the run ends, and the whole cache is checked bit for bit."""
    n = pb.RESHAPE_CALLS[num_tokens]
    num_blocks = n * num_tokens // BLOCK_SIZE + 64
    gen = torch.Generator(device="cuda").manual_seed(secret_seed())
    with client.trusted_worker() as bw:
        base = bw.import_module("autograder.baselines").get("vllm.reshape_and_cache")
        if not base.available:
            pytest.skip(f"not graded here: {base.reason}")
        shape = (n, num_tokens, NUM_KV_HEADS, HEAD_SIZE)
        key = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float16)  # fixed per test
        value = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float16)
        sides = {}
        for name in ("student", "vllm"):
            t = dict(key=client.device_tensor(shape, torch.float16), value=client.device_tensor(shape, torch.float16),
                     slots=client.device_tensor((n, num_tokens), torch.int64),
                     kc=client.device_tensor((num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE), torch.float16),
                     vc=client.device_tensor((num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE), torch.float16))
            t["key"].copy_(key)
            t["value"].copy_(value)
            sides[name] = t

        def write(t):
            return lambda slots: t["slots"].copy_(slots)

        def calls(t):
            return [((t["key"][i], t["value"][i], t["kc"], t["vc"], t["slots"][i]), {}) for i in range(n)]

        primary = base.description
        loops = {
            "student": timing.Loop(pa.kernels.reshape_and_cache, calls(sides["student"]),
                                   write(sides["student"]), [sides["student"]["kc"], sides["student"]["vc"]]),
            primary: timing.Loop(base.impl, calls(sides["vllm"]), write(sides["vllm"]),
                                 [sides["vllm"]["kc"], sides["vllm"]["vc"]]),
        }
        calibrate = timing.Loop(base.impl, [], loops[primary].write, loops[primary].outputs)

        def fresh(trial):  # a fresh permutation of the slots: every call its own
            return torch.randperm(num_blocks * BLOCK_SIZE, generator=gen, device="cuda")[:n * num_tokens].view(n, -1)

        def check(slots, name, out):
            want = torch.full((num_blocks * BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE), float("nan"), dtype=torch.float16,
                              device="cuda")
            for cache, src in zip(out, (key, value)):
                want.fill_(float("nan"))
                want[slots.reshape(-1)] = src.reshape(-1, NUM_KV_HEADS, HEAD_SIZE)
                got = cache.view(-1, NUM_KV_HEADS, HEAD_SIZE)
                if not torch.equal(got.view(torch.int16), want.view(torch.int16)):
                    bad = (got.view(torch.int16) != want.view(torch.int16)).flatten(1).any(1).nonzero()
                    raise AssertionError(f"{name}: after a timed run, slot {int(bad[0])} of the cache does not hold "
                                         f"what the run's calls wrote there ({int(bad.numel())} slots differ)")

        cmp = timing.compare_loops(loops, fresh, check, student="student", baseline=primary, calibrate=calibrate,
                                   min_trials=10, max_trials=40, budget_s=20)
    grade.extra.update(calls_per_run=n)
    timing.record(grade, cmp, "paged_attention", "vs_vllm_reshape_and_cache")
    print(cmp.describe())
