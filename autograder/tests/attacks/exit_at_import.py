
# ---- not an attack: the module ends the process when imported (appended to kv_cache/kv_cache.py)
import os as _os

_os._exit(1)
