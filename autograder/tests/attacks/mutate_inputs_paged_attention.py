# Attack: change the inputs in place, so that the reference the test computes after the call, from
# its own tensors, agrees with an answer of zeros: every slot becomes padding, every sequence empty.
# Appended to paged_attention/kernels.py of the stubs. Caught: inputs are read-only to the
# submission (client.InputModified); only a tensor the test declared writable takes its writes.


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping):
    slot_mapping.fill_(-1)          # "every token is padding": the test's live set becomes empty

def _zero_out(query, seq_lens, out):
    seq_lens.zero_()                # reference(case) over 0 tokens per sequence is all zeros
    out = torch.empty_like(query) if out is None else out
    return out.zero_()

def paged_attention_decode(query, key_cache, value_cache, block_tables, seq_lens, scale, out=None, **kw):
    return _zero_out(query, seq_lens, out)

def paged_attention_decode_split_k(query, key_cache, value_cache, block_tables, seq_lens, scale, num_splits,
                                   max_seq_len=None, out=None, **kw):
    return _zero_out(query, seq_lens, out)

def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=None):
    return _zero_out(query, seq_lens, out)

