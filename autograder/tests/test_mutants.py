"""Every graded suite must tell a right answer from plausible wrong ones.

Each mutant is the reference solution with one realistic mistake; the listed tests must
fail on it (and pass on the reference, which the full-marks test checks).
"""
import pytest

from autograder.runner import run_assignment

KV_MUTANTS = {
    "cache_written_at_slot_0": (
        {"kv_cache/kv_cache.py": [("self.k[:, :, self.length:self.length + n] = k", "self.k[:, :, 0:n] = k")]},
        "append_prefill or decode_logits_match", ["test_append_prefill_then_decode", "test_decode_logits_match_transformers"]),
    "decode_rope_at_position_0": (
        {"kv_cache/generate.py": [("new_pos = lens[:, None] + step", "new_pos = torch.zeros_like(lens[:, None])")]},
        "greedy_matches", ["test_greedy_matches_transformers"]),
    "reset_keeps_stale_entries": (
        {"kv_cache/kv_cache.py": [("never read\n        self.length = 0", "never read\n        pass")]},
        "reset", ["test_reset_forgets_everything", "test_reused_cache_after_reset"]),
    "gqa_heads_tiled_not_grouped": (
        {"kv_cache/attention.py": [("return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)",
                                    "return x.repeat(1, n_rep, 1, 1)")]},
        "repeat_kv or decode_logits_match", ["test_repeat_kv_head_mapping", "test_decode_logits_match_transformers"]),
    "scale_missing": (
        {"kv_cache/attention.py": [("k.transpose(-1, -2)) * scale", "k.transpose(-1, -2))")]},
        "attend", ["test_attend_matches_reference"]),
    "padding_not_masked": (
        {"kv_cache/attention.py": [("visible = visible[None, None] & kv_valid[:, None, None, :]", "visible = visible[None, None]")]},
        "attend or left_padded or ragged", ["test_attend_matches_reference", "test_left_padded_batch", "test_ragged_batch"]),
    "bytes_without_v": (
        {"kv_cache/kv_cache.py": [("return 2 * config.num_layers", "return config.num_layers")]},
        "bytes", ["test_kv_cache_bytes_real_models", "test_formula_equals_allocated_bytes"]),
    "top_p_drops_crossing_token": (
        {"kv_cache/sampling.py": [("drop |= before >= top_p", "drop |= probs.cumsum(dim=-1) > top_p")]},
        "top_p or frequencies", ["test_top_k_top_p_sets", "test_sampling_frequencies"]),
    "seed_ignored": (
        {"kv_cache/generate.py": [("generator = torch.Generator(device=device).manual_seed(params.seed)", "generator = None")]},
        "seed", ["test_seed_reproduces"]),
    "eos_not_stopping": (
        {"kv_cache/generate.py": [("done |= torch.isin(tok, eos)", "pass")]},
        "eos", ["test_eos_and_max_tokens"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(KV_MUTANTS))
def test_kv_cache_mutant_loses_points(submission, mutant):
    patches, keyword, must_fail = KV_MUTANTS[mutant]
    result = run_assignment("kv_cache", submission(patches), keyword=keyword)
    failed = {t.nodeid.split("::")[-1].split("[")[0] for t in result.tests if t.status == "failed"}
    missing = [t for t in must_fail if t not in failed]
    assert not missing, f"mutant {mutant} was not caught by {missing}; failed: {sorted(failed)}"
