"""Trace replay: how much reserved KV memory holds live tokens. Given: it lives in the course
library (llmsys/simulate.py), where the grader runs its own copy on its side of the sandbox
against your KVCacheManager; this module re-exports it, for `bench block_manager` and for you.
Editing it changes nothing that is graded."""
from llmsys.simulate import Timeline, replay_naive, replay_paged  # noqa: F401
