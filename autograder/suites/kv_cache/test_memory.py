"""kv_cache_bytes: the formula, for real models and against what KVCache really allocates."""
import pytest
import torch

from llmsys.models import model_path


def config_of(kv, layers, kv_heads, head_dim, heads=None):
    heads = heads or kv_heads
    return kv.model.ModelConfig(vocab_size=1000, hidden_size=heads * head_dim, intermediate_size=1, num_layers=layers,
                                num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim)


@pytest.mark.points(1)
def test_kv_cache_bytes_real_models(kv):
    """Bytes per token for Llama-3-8B, Qwen2.5-0.5B and Llama-2-7B (no GQA), scaled by batch and length."""
    llama3 = config_of(kv, 32, 8, 128, heads=32)
    assert kv.cache.kv_cache_bytes(llama3, 1, 1, torch.bfloat16) == 128 * 1024, \
        "Llama-3-8B at bf16 needs 128 KiB per token"
    qwen = config_of(kv, 24, 2, 64, heads=14)
    assert kv.cache.kv_cache_bytes(qwen, 1, 1, torch.bfloat16) == 12 * 1024, "Qwen2.5-0.5B: 2 x 24 x 2 x 64 x 2 bytes"
    llama2 = config_of(kv, 32, 32, 128)
    got = kv.cache.kv_cache_bytes(llama2, 3, 4096, torch.float16)
    assert got == 3 * 4096 * 512 * 1024, \
        f"Llama-2-7B, batch 3, 4096 tokens, fp16: {got} bytes; expected 2 x 32 x 3 x 4096 x 32 x 128 x 2 " \
        "(512 KiB a token)"
    got = kv.cache.kv_cache_bytes(qwen, 5, 1000, torch.float32)
    assert got == 5 * 1000 * 24 * 1024, \
        f"Qwen2.5-0.5B, batch 5, 1000 tokens, fp32: {got} bytes; expected 2 x 24 x 5 x 1000 x 2 x 64 x 4 " \
        "(24 KiB a token)"


@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_formula_equals_allocated_bytes(kv, rng, dtype):
    """allocate_kv_caches gives one KVCache per layer; their bytes must equal kv_cache_bytes."""
    model = kv.model.load_model(model_path("tiny-llama"), dtype=dtype)
    b, max_len = int(torch.randint(1, 5, (1,), generator=rng)), int(torch.randint(7, 300, (1,), generator=rng))
    caches = model.allocate_kv_caches(b, max_len)
    c = model.config
    for cache in caches:
        for name in ("k", "v"):
            t = getattr(cache, name)
            assert list(t.shape) == [b, c.num_kv_heads, max_len, c.head_dim], \
                f"KVCache.{name} has shape {list(t.shape)}, expected [batch, num_kv_heads, max_len, head_dim]"
            assert t.dtype == dtype, f"KVCache.{name} is {t.dtype}, expected {dtype}"
    allocated = sum(cache.nbytes for cache in caches)
    assert kv.cache.kv_cache_bytes(c, b, max_len, dtype) == allocated, \
        f"kv_cache_bytes says {kv.cache.kv_cache_bytes(c, b, max_len, dtype)}, the caches hold {allocated}"
