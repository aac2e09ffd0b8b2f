# Attack: zero the values in place and answer zeros; a reference computed after the call from the
# test's v agrees. Appended to kv_cache/attention.py of the stubs. Caught as mutate_inputs_paged_attention.

def attend(q, k, v, kv_valid, scale):
    v.zero_()
    return torch.zeros_like(q)
