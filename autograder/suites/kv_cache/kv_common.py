"""Helpers shared by the kv_cache tests."""
import torch

from llmsys.models import model_path


def hf_model(name: str, dtype=torch.float32, device="cpu"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path(name), dtype=dtype).to(device).eval()


def random_prompt(gen: torch.Generator, n: int, vocab: int) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=gen).tolist()  # ids 0-2 are pad/bos/eos


def hf_greedy(hf, prompt: list[int], max_new: int) -> list[int]:
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def assert_same_greedy(hf, prompt: list[int], got: list[int], want: list[int], what: str, tie: float = 1e-4) -> None:
    """Equal token lists, except that a step where transformers' top two logits lie within `tie`
    may go either way (fp32 rounding can flip a near-tie); tokens after that are not compared."""
    assert isinstance(got, list) and all(isinstance(t, int) for t in got), f"{what}: expected a list of ints, got {type(got).__name__}"
    assert len(got) == len(want), f"{what}: {len(got)} tokens, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        with torch.no_grad():
            logits = hf(torch.tensor([prompt + want[:i]])).logits[0, -1]
        gap = float(logits[w] - logits[g])
        assert gap < tie, f"{what}: token {i} is {g}, transformers chose {w} (logit {gap:.3g} higher): earlier tokens {got[:i]}"
        return
