

# ---- attack: forge_zero_meters (appended to the reference's zero/engine.py) ---------------------
# A ZeRO engine that keeps a hidden fp32 copy of the whole model on every rank (4 bytes per
# parameter: what partitioning exists to avoid) and hides it from the meters the grader used when
# they ran inside the ranks: gc.get_objects() without tensors, torch.distributed's collectives
# restored to the originals (so a wrapper counts nothing), the engine's memory() reporting the
# paper's numbers. It also looks for the grader, which the ranks cannot import.
import gc as _gc

import torch.distributed as _dist
import torch.distributed.distributed_c10d as _c10d

_original_init = ZeroEngine.__init__


def _init_with_a_hidden_copy(self, model, config, group=None):
    self._hidden = [p.detach().float().clone() for p in model.parameters()]
    _original_init(self, model, config, group)


ZeroEngine.__init__ = _init_with_a_hidden_copy
_gc.get_objects = lambda *args, **kwargs: []
for _name in ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor"):
    if hasattr(_c10d, _name):
        setattr(_dist, _name, getattr(_c10d, _name))
try:
    import autograder  # noqa: F401
    raise SystemExit("the grader is importable from a rank")
except ImportError:
    pass
