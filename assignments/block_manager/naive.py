"""The allocator paging replaces, for comparison. Given: it lives in the course library
(llmsys/simulate.py, NaiveAllocator), which the grader runs on its own side of the sandbox.

Each admitted request reserves max_model_len contiguous token slots up front (it cannot know
how long its output will be), as systems before vLLM did. Slots reserved but not yet filled
are wasted; with real length distributions that is most of them.
"""
from llmsys.simulate import NaiveAllocator  # noqa: F401
