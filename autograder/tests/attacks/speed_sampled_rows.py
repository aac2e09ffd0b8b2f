

# ---- attack: compute only the sequences the old speed check sampled (the first and the last) ----
_honest_paged_attention = paged_attention


def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=None):
    out = torch.empty_like(query) if out is None else out
    idx = torch.tensor(sorted({0, query.shape[0] - 1}), device=query.device)
    out[idx] = _honest_paged_attention(query[idx], key_cache, value_cache, block_tables[idx], seq_lens[idx], scale,
                                       max_seq_len)
    return out
