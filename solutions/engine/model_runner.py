"""Runs the course model over one step's batch with a paged KV cache.

A step's tokens are flattened: sequence s contributes q_len[s] consecutive tokens (a prompt
chunk, or 1 decode token). The tensors of a step (vLLM's names):
    input_ids, positions   [num_tokens] int64
    slot_mapping           [num_tokens] int64   where each token's K/V is written
    query_start_loc        [num_seqs + 1] int32 sequence s owns tokens [qsl[s], qsl[s + 1])
    seq_lens               [num_seqs] int32     tokens in the cache after this step
    block_tables           [num_seqs, max_blocks] int32 (unused entries 0)
KV caches, one pair per layer: [num_blocks, block_size, num_kv_heads, head_size].
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from block_manager.kv_cache_manager import KVCacheManager
from kv_cache.attention import attend
from kv_cache.rope import apply_rotary, rotary_cos_sin

from .scheduler import ScheduledSeq


@dataclass
class BatchInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    max_seq_len: int
    decode_only: bool


def prepare_inputs(plan: list[ScheduledSeq], kv_manager: KVCacheManager, device: torch.device) -> BatchInputs:
    """Build a step's tensors from the scheduler's plan (a list of ScheduledSeq).

    For a ScheduledSeq with sequence `seq` computing `num_tokens` tokens: its tokens are
    seq.token_ids[c : c + num_tokens] with c = seq.num_computed_tokens, at positions
    c .. c + num_tokens - 1, written to its slot_mapping; its seq_len is c + num_tokens; its
    block table is kv_manager.get_block_table(seq.seq_id). decode_only: every sequence
    computes exactly one token.
    """
    # BEGIN SOLUTION hint: concatenate per-sequence token ids / positions / slots; cumulative q lengths;
    #   pad block tables with 0
    ids, pos, slots, qsl, lens, tables = [], [], [], [0], [], []
    for p in plan:
        c = p.seq.num_computed_tokens
        ids += p.seq.token_ids[c:c + p.num_tokens]
        pos += range(c, c + p.num_tokens)
        slots += p.slot_mapping
        qsl.append(qsl[-1] + p.num_tokens)
        lens.append(c + p.num_tokens)
        tables.append(kv_manager.get_block_table(p.seq.seq_id))
    width = max(len(t) for t in tables)
    padded = [t + [0] * (width - len(t)) for t in tables]

    def to(x, dtype):  # one host list -> one tensor -> one copy: no per-sequence tensor work
        return torch.tensor(x, dtype=dtype).to(device, non_blocking=True)

    return BatchInputs(to(ids, torch.long), to(pos, torch.long), to(slots, torch.long), to(qsl, torch.int32),
                       to(lens, torch.int32), to(padded, torch.int32), max(lens), all(p.num_tokens == 1 for p in plan))
    # END SOLUTION


def paged_attention_reference(q, key_cache, value_cache, inputs: BatchInputs, scale: float, attend):
    """Attention of every scheduled token over its sequence's cached tokens (the new ones are in
    the cache already), in plain PyTorch: the CPU path, and the GPU path for prefill.

    q: [num_tokens, num_heads, head_size]. For sequence s: gather its seq_len cached K/V
    through its block table ([seq_len, num_kv_heads, head_size]) and call
    attend(q_s [1, H, q_len, D], k [1, Hkv, seq_len, D], v, None, scale): its q_len queries
    are the last q_len of its seq_len tokens, causal. Returns [num_tokens, num_heads, head_size].
    """
    # BEGIN SOLUTION hint: per sequence: idx = arange(seq_len); blocks = table[idx // bs];
    #   k = key_cache[blocks, idx % bs]; attend on [1, heads, len, D] views
    out = torch.empty_like(q)
    bs = key_cache.shape[1]
    qsl = inputs.query_start_loc.tolist()
    lens = inputs.seq_lens.tolist()
    for s, n in enumerate(lens):
        a, b = qsl[s], qsl[s + 1]
        idx = torch.arange(n, device=q.device)
        blocks = inputs.block_tables[s, idx // bs].long()
        k = key_cache[blocks, idx % bs].transpose(0, 1)[None]     # [1, Hkv, n, D]
        v = value_cache[blocks, idx % bs].transpose(0, 1)[None]
        out[a:b] = attend(q[a:b].transpose(0, 1)[None], k, v, None, scale)[0].transpose(0, 1)
    return out
    # END SOLUTION


class _DecodeGraphs:
    """CUDA graphs of the decode-only forward, one per batch-size bucket (vLLM's and nano-vllm's
    way of removing the launch overhead: a step of 24 layers is ~300 kernel launches, ~3 ms of
    Python, for ~1 ms of GPU work). A graph replays fixed kernels on fixed memory, so the step's
    inputs are copied into static buffers first; a batch of n sequences runs the smallest bucket
    >= n, its extra rows padded (slot -1: nothing written; seq_len 1).

    Captured lazily, the first time a bucket is needed, with that step's real inputs in the
    buffers (the warm-up and the capture write the same K/V into the same slots as the replay)."""

    def __init__(self, runner: "ModelRunner", max_num_seqs: int, max_blocks_per_seq: int):
        self.runner = runner
        self.sizes = [b for b in (1, 2, 4, 8, *range(16, max_num_seqs + 16, 16)) if b < max_num_seqs] + [max_num_seqs]
        dev = runner.device
        self.input_ids = torch.zeros(max_num_seqs, dtype=torch.long, device=dev)
        self.positions = torch.zeros(max_num_seqs, dtype=torch.long, device=dev)
        self.slot_mapping = torch.full((max_num_seqs,), -1, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(max_num_seqs, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros(max_num_seqs, max_blocks_per_seq, dtype=torch.int32, device=dev)
        self.max_seq_len = max_blocks_per_seq * runner.block_size  # a bound fixed at capture, not this step's
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None

    def _forward(self, b: int) -> torch.Tensor:
        r = self.runner
        tables, lens = self.block_tables[:b], self.seq_lens[:b]

        def attention(q, kc, vc, scale):
            return r.kernels.paged_attention(q, kc, vc, tables, lens, scale, self.max_seq_len)

        return r.run_layers(self.input_ids[:b], self.positions[:b], self.slot_mapping[:b], attention,
                            torch.arange(b, device=r.device))

    def run(self, inputs: BatchInputs) -> torch.Tensor | None:
        """Logits [num_seqs, vocab], or None when the batch is larger than the largest bucket."""
        n = inputs.input_ids.shape[0]
        b = next((s for s in self.sizes if s >= n), None)
        w = inputs.block_tables.shape[1]
        if b is None or w > self.block_tables.shape[1]:  # no bucket this large, or tables wider than max_model_len
            return None
        self.input_ids[:n].copy_(inputs.input_ids)
        self.positions[:n].copy_(inputs.positions)
        self.slot_mapping[:n].copy_(inputs.slot_mapping)
        self.slot_mapping[n:b].fill_(-1)
        self.seq_lens[:n].copy_(inputs.seq_lens)
        self.seq_lens[n:b].fill_(1)
        self.block_tables[:n, :w].copy_(inputs.block_tables)  # columns past w: never read (seq_lens)
        if b not in self.graphs:
            for _ in range(2):  # compiles the Triton kernels and settles cuBLAS before capture
                self._forward(b)
            torch.cuda.synchronize(self.runner.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = self._forward(b)
            self.pool = graph.pool()  # every bucket's graph shares one memory pool: they never run at once
            self.graphs[b] = (graph, logits)
        graph, logits = self.graphs[b]
        graph.replay()
        return logits[:n]


class ModelRunner:
    """The course model (kv_cache.model.CausalLM) run token-flat over paged caches. Given.

    Three paths, by step and device:
      - CPU: every token through paged_attention_reference (your PyTorch version).
      - GPU, decodes only: your paged_attention kernel, the whole forward replayed as a CUDA
        graph (_DecodeGraphs) when the kernels allow capture (no host sync in them).
      - GPU, prompt chunks (with or without decodes): one unified_attention call per layer for
        every token of the step (engine/unified_attention.py).
    """

    def __init__(self, model, num_blocks: int, block_size: int, use_kernels: bool | None = None,
                 max_num_seqs: int = 128, max_model_len: int | None = None, cuda_graphs: bool = True):
        self.model = model
        c = model.config
        self.device, self.dtype = model.device, model.dtype
        self.block_size = block_size
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [(torch.empty(shape, dtype=self.dtype, device=self.device),
                           torch.empty(shape, dtype=self.dtype, device=self.device)) for _ in range(c.num_layers)]
        self.attend, self.rotary_cos_sin, self.apply_rotary = attend, rotary_cos_sin, apply_rotary
        # the student's Triton kernels on a GPU; the PyTorch path on a CPU (no interpreter: too slow)
        self.kernels = None
        if use_kernels if use_kernels is not None else self.device.type == "cuda":
            from paged_attention import kernels  # imported only here: it needs Triton

            self.kernels = kernels
        self.graphs = None
        if cuda_graphs and self.device.type == "cuda":
            max_len = max_model_len or num_blocks * block_size
            self.graphs = _DecodeGraphs(self, max_num_seqs, -(-max_len // block_size))

    def write_cache(self, layer: int, k, v, slot_mapping) -> None:
        kc, vc = self.kv_caches[layer]
        if self.kernels is not None:
            self.kernels.reshape_and_cache(k, v, kc, vc, slot_mapping)
        else:
            kc.view(-1, *kc.shape[2:])[slot_mapping] = k
            vc.view(-1, *vc.shape[2:])[slot_mapping] = v

    def run_layers(self, input_ids, positions, slot_mapping, attention, last) -> torch.Tensor:
        """The model over a step's flat tokens. attention(q, key_cache, value_cache, scale) ->
        [num_tokens, num_heads, head_size] is the step's attention (the new K/V are cached
        already); last: the token index of each sequence's logits. Returns [num_seqs, vocab] fp32."""
        m, c = self.model, self.model.config
        x = m.model.embed_tokens(input_ids)[None]                            # [1, N, hidden]
        cos, sin = self.rotary_cos_sin(positions[None], m.inv_freq, x.dtype)
        N = x.shape[1]
        for i, layer in enumerate(m.model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, N, c.num_heads, c.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, N, c.num_kv_heads, c.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, N, c.num_kv_heads, c.head_dim)[0]
            q, k = self.apply_rotary(q, cos, sin)[0].transpose(0, 1), self.apply_rotary(k, cos, sin)[0].transpose(0, 1)
            self.write_cache(i, k.contiguous(), v.contiguous(), slot_mapping)
            kc, vc = self.kv_caches[i]
            o = attention(q.contiguous(), kc, vc, attn.scale)
            x = x + attn.o_proj(o.reshape(1, N, c.num_heads * c.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return m.lm_head(m.model.norm(x[0, last])).float()

    @torch.no_grad()
    def forward(self, inputs: BatchInputs) -> torch.Tensor:
        """Logits [num_seqs, vocab] (float32) at each scheduled sequence's last token."""
        if self.kernels is None:
            def attention(q, kc, vc, scale):
                return paged_attention_reference(q, kc, vc, inputs, scale, self.attend)
        elif inputs.decode_only:
            if self.graphs is not None:
                try:
                    logits = self.graphs.run(inputs)
                except RuntimeError as e:  # e.g. a host sync in the kernels: run eagerly from now on
                    print(f"engine/model_runner.py: CUDA-graph capture failed, running eagerly: {e}", file=sys.stderr)
                    self.graphs = None
                    logits = None
                if logits is not None:
                    return logits

            def attention(q, kc, vc, scale):
                return self.kernels.paged_attention(q, kc, vc, inputs.block_tables, inputs.seq_lens, scale,
                                                    inputs.max_seq_len)
        else:
            from .unified_attention import unified_attention  # imported only here: it needs Triton

            def attention(q, kc, vc, scale):  # at most every token of the step in one sequence's chunk
                return unified_attention(q, kc, vc, inputs.query_start_loc, inputs.seq_lens, inputs.block_tables,
                                         scale, max_query_len=q.shape[0])
        last = inputs.query_start_loc[1:].long() - 1
        return self.run_layers(inputs.input_ids, inputs.positions, inputs.slot_mapping, attention, last)
