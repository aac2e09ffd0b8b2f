

# ---- attack: a slow decode (the GPU spins ~1 ms per call), and every clock of the worker lies ----
# The grader used to time calls with CUDA events in the process that ran them. Now the clock is the
# trusted process's, so lying to this process's clocks and synchronize() must gain nothing: the
# slow kernel must score as slow (or fail), never faster than vLLM.
import time as _attack_time

_honest_paged_attention = paged_attention


def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=None):
    torch.cuda._sleep(2_000_000)
    return _honest_paged_attention(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, out=out)


torch.cuda.Event.elapsed_time = lambda self, end: 1e-6
_attack_time.perf_counter = lambda: 0.0
_attack_time.monotonic = lambda: 0.0
torch.cuda.synchronize = lambda *a, **k: None
