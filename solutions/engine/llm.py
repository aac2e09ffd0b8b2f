"""vLLM's offline interface over your engine. Given.

    llm = LLM(model="path/or/hub-id/or/course-name", dtype=torch.bfloat16, max_model_len=2048,
              gpu_memory_utilization=0.9, block_size=16)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=64))
    outs[i].outputs[0].token_ids, outs[i].outputs[0].text

Prompts are strings (needs a tokenizer in the model folder) or lists of token ids. The KV
cache gets what gpu_memory_utilization leaves after the weights, as vLLM sizes it (on a CPU:
num_kv_blocks, or enough for max_num_seqs sequences of max_model_len).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Iterator

import torch

# The engine runs on your own assignments 1-3, imported by their package names.
import kv_cache.model as kvm
from block_manager.kv_cache_manager import KVCacheManager
from kv_cache.sampling import SamplingParams, sample

from .model_runner import ModelRunner, prepare_inputs
from .scheduler import Scheduler
from .sequence import Sequence, Status

__all__ = ["LLM", "LLMEngine", "SamplingParams"]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class StepStats:
    num_running: int
    num_waiting: int
    num_tokens: int
    kv_blocks_used: int


def sample_batch(logits: torch.Tensor, rows: list[int], seqs: list[Sequence]) -> list[int]:
    """One token for each of `seqs` from its row of logits [num_seqs, vocab], with one host sync
    for the whole step. Sequences with the same temperature / top-k / top-p and no seed of their
    own are sampled together, by one call of sample(); a seeded sequence draws from its own
    generator alone, so its tokens do not depend on its batch companions."""
    if not seqs:
        return []
    groups: dict[tuple, list[int]] = {}
    for j, seq in enumerate(seqs):
        p = seq.params
        key = (p.temperature, p.top_k, p.top_p) if seq.generator is None else ("seeded", j)
        groups.setdefault(key, []).append(j)
    picks, order = [], []
    for js in groups.values():
        index = [rows[j] for j in js]
        part = logits if index == list(range(logits.shape[0])) else logits[torch.tensor(index, device=logits.device)]
        picks.append(sample(part, seqs[js[0]].params, seqs[js[0]].generator))
        order += js
    tokens = [0] * len(seqs)
    for j, tok in zip(order, torch.cat(picks).tolist()):
        tokens[j] = tok
    return tokens


@dataclass
class LLMEngine:
    model: object
    scheduler: Scheduler
    runner: ModelRunner
    tokenizer: object = None
    stats: list[StepStats] = field(default_factory=list)
    # Every step's plan as plain data, what the grader checks the schedule with (on its side of
    # the sandbox, against the requests it knows): ([(seq_id, num_computed_tokens before the step,
    # num_tokens, slot_mapping), ...], [seq_ids preempted by this step's schedule()]). None: not
    # recorded (the speed runs).
    schedule_log: list[tuple[list[tuple[str, int, int, list[int]]], list[str]]] | None = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)
    seqs: dict[str, Sequence] = field(default_factory=dict)

    def add_request(self, prompt: list[int], params, request_id: str | None = None) -> str:
        if not prompt:
            raise ValueError("a prompt needs at least one token")
        n = next(self._ids)
        rid = request_id or f"req-{n}"
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.runner.device).manual_seed(params.seed)
        seq = Sequence(rid, list(prompt), params, arrival=n, generator=gen)
        self.seqs[rid] = seq
        self.scheduler.add(seq)
        return rid

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[tuple[Sequence, int]]:
        """One iteration: schedule, run, sample. Returns the (sequence, new token) pairs."""
        log = self.schedule_log
        running = [s.seq_id for s in self.scheduler.running] if log is not None else []
        plan = self.scheduler.schedule()
        if log is not None:
            still = {s.seq_id for s in self.scheduler.running}
            log.append(([(p.seq.seq_id, p.seq.num_computed_tokens, p.num_tokens, list(p.slot_mapping)) for p in plan],
                        [r for r in running if r not in still]))
        if not plan:
            if self.scheduler.has_unfinished():
                kv, waiting = self.scheduler.kv, list(self.scheduler.waiting)
                need = kv.blocks_needed(len(waiting[0].token_ids)) if waiting else 0
                if need > kv.pool.num_blocks:  # no schedule could ever admit it
                    raise RuntimeError(f"request {waiting[0].seq_id!r} needs {need} KV blocks, more than the whole "
                                       f"cache has ({kv.pool.num_blocks}): raise num_kv_blocks or lower max_model_len")
                raise RuntimeError(
                    f"the scheduler planned nothing although {len(self.scheduler.running)} requests run and "
                    f"{len(waiting)} wait, with {kv.get_num_free_blocks()} of {kv.pool.num_blocks} KV blocks free: "
                    "Scheduler.schedule (engine/scheduler.py) must plan at least one running decode or one admission "
                    "when the cache has room")
            return []
        kv = self.scheduler.kv
        self.stats.append(StepStats(len(self.scheduler.running), len(self.scheduler.waiting),
                                    sum(p.num_tokens for p in plan), kv.pool.num_blocks - kv.get_num_free_blocks()))
        logits = self.runner.forward(prepare_inputs(plan, kv, self.runner.device))
        rows, done = [], []
        for i, p in enumerate(plan):
            p.seq.num_computed_tokens += p.num_tokens
            if p.seq.num_uncomputed == 0:  # else a prompt chunk: nothing to sample yet
                rows.append(i)
                done.append(p.seq)
        eos = set(self.model.config.eos_token_id or [])
        new = []
        for seq, tok in zip(done, sample_batch(logits, rows, done)):
            seq.output_token_ids.append(tok)
            new.append((seq, tok))
            if not seq.params.ignore_eos and tok in eos:
                self.scheduler.finish(seq, "stop")
            elif len(seq.output_token_ids) >= seq.params.max_tokens:
                self.scheduler.finish(seq, "length")
        return new

    def output(self, rid: str) -> RequestOutput:
        seq = self.seqs[rid]
        text = self.tokenizer.decode(seq.output_token_ids, skip_special_tokens=True) if self.tokenizer else ""
        return RequestOutput(rid, seq.prompt_token_ids, [CompletionOutput(0, text, list(seq.output_token_ids),
                                                                          seq.finish_reason)],
                             seq.status is Status.FINISHED)


class LLM:
    def __init__(self, model: str | None = None, dtype: torch.dtype | str = torch.float32, max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.9, block_size: int = 16, max_num_seqs: int = 64,
                 max_num_batched_tokens: int = 2048, num_kv_blocks: int | None = None,
                 enable_prefix_caching: bool = True, device: str | None = None):
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        folder = kvm.resolve_checkpoint(model)
        self.model = kvm.load_model(folder, dtype=dtype, device=device)
        self.max_model_len = max_model_len
        c = self.model.config
        block_bytes = 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * self.model.dtype.itemsize
        if num_kv_blocks is None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                free, total = torch.cuda.mem_get_info()
                budget = total * gpu_memory_utilization - (total - free) - 512 * 2**20  # room for activations
                num_kv_blocks = int(budget // block_bytes)
            else:
                num_kv_blocks = max_num_seqs * -(-max_model_len // block_size)
        if num_kv_blocks * block_size < max_model_len:
            raise ValueError(f"{num_kv_blocks} KV blocks of {block_size} tokens cannot hold one sequence of "
                             f"max_model_len={max_model_len}: raise gpu_memory_utilization or num_kv_blocks")
        manager = KVCacheManager(
            num_kv_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        tokenizer = None
        if (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
        self.engine = LLMEngine(self.model, Scheduler(manager, max_num_seqs, max_num_batched_tokens),
                                ModelRunner(self.model, num_kv_blocks, block_size, max_num_seqs=max_num_seqs,
                                            max_model_len=max_model_len), tokenizer)
        self.num_kv_blocks = num_kv_blocks

    def _tokens(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.engine.tokenizer is None:
                raise ValueError("text prompts need a tokenizer in the model folder; pass token ids instead")
            prompt = self.engine.tokenizer(prompt)["input_ids"]
        prompt = list(prompt)
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit max_model_len={self.max_model_len}")
        return prompt

    def _params(self, prompt, params):
        limit = self.max_model_len - len(prompt)
        if params.max_tokens > limit:
            params = dataclasses.replace(params, max_tokens=limit)
        return params

    def generate(self, prompts, sampling_params=None) -> list[RequestOutput]:
        """Generate for every prompt (batched with continuous batching); outputs in prompt order."""
        params = sampling_params or SamplingParams()
        plist = params if isinstance(params, list) else [params] * len(prompts)
        ids = []
        for p, sp in zip(prompts, plist):
            toks = self._tokens(p)
            ids.append(self.engine.add_request(toks, self._params(toks, sp)))
        while self.engine.has_unfinished():
            self.engine.step()
        return [self.engine.output(r) for r in ids]

    def stream(self, prompts, sampling_params=None) -> Iterator[tuple[int, int]]:
        """Yield (prompt index, new token id) as tokens are produced."""
        params = sampling_params or SamplingParams()
        index = {}
        for i, p in enumerate(prompts):
            toks = self._tokens(p)
            index[self.engine.add_request(toks, self._params(toks, params))] = i
        while self.engine.has_unfinished():
            for seq, tok in self.engine.step():
                if seq.seq_id in index:
                    yield index[seq.seq_id], tok
