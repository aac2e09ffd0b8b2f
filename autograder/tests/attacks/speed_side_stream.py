

# ---- attack: return at once, and do the (slow) work on a side stream the caller never waits for ----
# synchronize() is disabled too, so the worker answers "done" while its GPU is still busy: the
# trusted process copies the outputs out before it stops its clock, so the unfinished work is
# either in its time or missing from the copy (poison left: the test fails).
_honest_paged_attention = paged_attention
_attack_side = []


def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=None):
    if not _attack_side:
        _attack_side.append(torch.cuda.Stream())
    side = _attack_side[0]
    out = torch.empty_like(query) if out is None else out
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(2_000_000)
        _honest_paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=out)
    return out


torch.cuda.synchronize = lambda *a, **k: None
