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

    def stepped(self, prompts: list[list[int]], output_lens: list[int]) -> dict:
        """The workload again, all requests added at t=0 and vLLM's engine stepped by hand, a
        timestamp per new token (as fixtures/engine_bench.run_engine does for the course's
        engine): seconds, ttft_s per request, itl_s per token after the first."""
        import time

        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        t0 = time.perf_counter()
        for i, (p, n) in enumerate(zip(prompts, output_lens)):
            engine.add_request(str(i), TokensPrompt(prompt_token_ids=list(p)),
                               SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
        seen, last, ttft, itl = [0] * len(prompts), {}, [0.0] * len(prompts), []
        while engine.has_unfinished_requests():
            outs = engine.step()
            now = time.perf_counter() - t0
            for o in outs:
                i = int(o.request_id)
                n = len(o.outputs[0].token_ids)
                if n > seen[i]:
                    if i in last:
                        itl += [(now - last[i]) / (n - seen[i])] * (n - seen[i])
                    else:
                        ttft[i] = now
                    seen[i], last[i] = n, now
        return dict(seconds=time.perf_counter() - t0, ttft_s=ttft, itl_s=itl, output_tokens=seen)


def main(argv: list[str] | None = None) -> int:
    """`python -m autograder.baselines.engines MODEL_DIR WORKLOAD.json [--eager]`: vLLM on a
    workload in a process of its own (`bench engine` runs it so: `import vllm` changes the
    importing process). WORKLOAD.json: {"max_model_len", "kv_blocks", "block_size",
    "max_num_seqs", "warm": [[prompt, output_len], ...], "requests": [...]}. Prints one JSON
    line: the configuration, generate()'s seconds and tokens, and the stepped run's latencies."""
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("workload")
    ap.add_argument("--eager", action="store_true")
    a = ap.parse_args(argv)
    w = json.loads(open(a.workload).read())
    t0 = time.perf_counter()
    vo = VllmOffline(a.model_dir, w["max_model_len"], w["kv_blocks"], w["block_size"], w["max_num_seqs"],
                     enforce_eager=a.eager)
    startup = time.perf_counter() - t0
    warm, reqs = w["warm"], w["requests"]
    vo.generate([p for p, _ in warm], [n for _, n in warm])
    runs, tokens = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        tokens = vo.generate([p for p, _ in reqs], [n for _, n in reqs])
        runs.append(time.perf_counter() - t0)
    stepped = vo.stepped([p for p, _ in reqs], [n for _, n in reqs])
    print("VLLM_RESULT " + json.dumps(dict(description=vo.description, config=vo.config, startup_s=startup,
                                           generate_s=runs, outputs=tokens, stepped=stepped)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


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
