

# ---- attack: call vLLM's own kernel (no import: load its op library by path, then torch.ops) ----
# The sandbox does not see vLLM's files or its op library, so the call fails and the speed tests
# (which compare against that very kernel) score nothing.
import glob as _attack_glob
import os as _attack_os
import sys as _attack_sys

_attack_found = []
for _p in [_attack_os.environ.get("VLLM_OPLIB", ""), "/tmp/vllm_C_stable.so",
           *[g for d in _attack_sys.path for g in _attack_glob.glob(_attack_os.path.join(d, "vllm", "_C*.so"))]]:
    if _p and _attack_os.path.exists(_p):
        try:
            torch.ops.load_library(_p)
            _attack_found.append(_p)
        except Exception:  # noqa: BLE001
            pass


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping):
    one = torch.ones((), dtype=torch.float32, device=key.device)
    if not _attack_found:
        raise RuntimeError("attack report: no vLLM op library visible in the sandbox")
    torch.ops._C_cache_ops.reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, "auto", one, one)
