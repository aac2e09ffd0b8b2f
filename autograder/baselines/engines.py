"""Whole-system baselines: vLLM's offline engine, DeepSpeed's ZeRO, and naive PyTorch.

Detection lives here for vLLM's engine and DeepSpeed, and `VllmOffline`, the engine speed test's
baseline, which runs in a trusted worker of its own (`import vllm` changes Inductor and NCCL
settings of the process that imports it). ZeRO's suite drives DeepSpeed through its public API
(deepspeed.initialize) itself.
"""
from __future__ import annotations

from . import Baseline, _cuda, register


@register("vllm.engine")
def vllm_engine() -> Baseline:
    name = "vllm.engine"
    if (why := _cuda()):
        return Baseline(name, "", False, why)
    try:
        import vllm
        from vllm import LLM  # noqa: F401
    except ImportError as e:
        return Baseline(name, "", False, f"vLLM's Python package is not importable ({e.name or e})")
    return Baseline(name, f"vLLM {vllm.__version__} LLM.generate (offline, continuous batching)", True, impl=LLM,
                    version=vllm.__version__)


class VllmOffline:
    """vLLM's offline engine on the engine benchmark's terms (fixtures/engine_bench.py): the
    same checkpoint folder (the same weights), the same KV blocks (num_gpu_blocks_override),
    prefix caching off, greedy, ignore_eos, token-id prompts without a tokenizer. Compiled with
    CUDA graphs (vLLM's default) unless enforce_eager. Made in the trusted worker:

        vo = worker.import_module("autograder.baselines.engines").VllmOffline(folder, ...)
        tokens = vo.generate(prompts, output_lens)      # one request: the whole workload
    """

    def __init__(self, model_dir: str, max_model_len: int, kv_blocks: int, block_size: int, max_num_seqs: int,
                 enforce_eager: bool = False, gpu_memory_utilization: float = 0.3):
        import os

        # vLLM forks its engine-core process unless it sees CUDA initialised; in this worker it may
        # be (vLLM's own imports), and a forked child cannot use it: always spawn
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
        import vllm

        self.config = dict(dtype="bfloat16", skip_tokenizer_init=True, max_model_len=max_model_len,
                           num_gpu_blocks_override=kv_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
                           enable_prefix_caching=False, enforce_eager=enforce_eager,
                           gpu_memory_utilization=gpu_memory_utilization)
        self.description = (f"vLLM {vllm.__version__} LLM.generate ("
                            + ("eager" if enforce_eager else "torch.compile + CUDA graphs") + ")")
        self.llm = vllm.LLM(model=model_dir, **self.config)

    def generate(self, prompts: list[list[int]], output_lens: list[int]) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                 [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in output_lens],
                                 use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]


@register("deepspeed.zero")
def deepspeed_zero() -> Baseline:
    name = "deepspeed.zero"
    try:
        import deepspeed
    except ImportError as e:
        return Baseline(name, "", False, f"DeepSpeed is not installed ({e.name or e}): pip install deepspeed")
    return Baseline(name, f"DeepSpeed {deepspeed.__version__} ZeRO (deepspeed.initialize)", True, impl=deepspeed,
                    version=deepspeed.__version__)


@register("naive.paged_attention")
def naive_paged_attention() -> Baseline:
    """Gather each sequence's blocks into a padded tensor, then scaled_dot_product_attention."""
    from ..fixtures.paged_attention import naive_torch

    return Baseline("naive.paged_attention", "naive PyTorch: gather + SDPA", True, impl=naive_torch)
