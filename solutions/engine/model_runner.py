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

import itertools
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


@dataclass
class _Split:
    """A mixed step, split once per step (see ModelRunner._split)."""
    decode: tuple | None           # (token index, block tables, seq lens, max seq len) of 1-token sequences
    prefill: torch.Tensor | None   # token index of the prompt-chunk tokens
    prefill_inputs: BatchInputs | None


def prepare_inputs(plan: list[ScheduledSeq], kv_manager: KVCacheManager, device: torch.device) -> BatchInputs:
    """Build a step's tensors from the scheduler's plan (a list of ScheduledSeq).

    For a ScheduledSeq with sequence `seq` computing `num_tokens` tokens: its tokens are
    seq.token_ids[c : c + num_tokens] with c = seq.num_computed_tokens, at positions
    c .. c + num_tokens - 1, written to its slot_mapping; its seq_len is c + num_tokens; its
    block table is kv_manager.get_block_table(seq.seq_id). decode_only: every sequence
    computes exactly one token.
    """
    # BEGIN SOLUTION hint: concatenate per-sequence token ids / positions / slots; cumulative q lengths; pad block tables with 0
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
    bt = torch.zeros(len(plan), width, dtype=torch.int32)
    for s, t in enumerate(tables):
        bt[s, :len(t)] = torch.tensor(t, dtype=torch.int32)

    def to(x, dtype):
        return torch.tensor(x, dtype=dtype).to(device, non_blocking=True)

    return BatchInputs(to(ids, torch.long), to(pos, torch.long), to(slots, torch.long), to(qsl, torch.int32),
                       to(lens, torch.int32), bt.to(device), max(lens), all(p.num_tokens == 1 for p in plan))
    # END SOLUTION


def paged_attention_reference(q, key_cache, value_cache, inputs: BatchInputs, scale: float, attend):
    """Attention of every scheduled token over its sequence's cached tokens (the new ones are in
    the cache already), in plain PyTorch: the CPU path, and the GPU path for prefill.

    q: [num_tokens, num_heads, head_size]. For sequence s: gather its seq_len cached K/V
    through its block table ([seq_len, num_kv_heads, head_size]) and call
    attend(q_s [1, H, q_len, D], k [1, Hkv, seq_len, D], v, None, scale): its q_len queries
    are the last q_len of its seq_len tokens, causal. Returns [num_tokens, num_heads, head_size].
    """
    # BEGIN SOLUTION hint: per sequence: idx = arange(seq_len); blocks = table[idx // bs]; k = key_cache[blocks, idx % bs]; attend on [1, heads, len, D] views
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


class ModelRunner:
    """The course model (kv_cache.model.CausalLM) run token-flat over paged caches. Given."""

    def __init__(self, model, num_blocks: int, block_size: int, use_kernels: bool | None = None):
        self.model = model
        c = model.config
        self.device, self.dtype = model.device, model.dtype
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [(torch.empty(shape, dtype=self.dtype, device=self.device),
                           torch.empty(shape, dtype=self.dtype, device=self.device)) for _ in range(c.num_layers)]
        self.attend, self.rotary_cos_sin, self.apply_rotary = attend, rotary_cos_sin, apply_rotary
        # the student's Triton kernels on a GPU; the PyTorch path on a CPU (no interpreter: too slow)
        self.kernels = None
        if use_kernels if use_kernels is not None else self.device.type == "cuda":
            from paged_attention import kernels  # imported only here: it needs Triton

            self.kernels = kernels

    def write_cache(self, layer: int, k, v, slot_mapping) -> None:
        kc, vc = self.kv_caches[layer]
        if self.kernels is not None:
            self.kernels.reshape_and_cache(k, v, kc, vc, slot_mapping)
        else:
            kc.view(-1, *kc.shape[2:])[slot_mapping] = k
            vc.view(-1, *vc.shape[2:])[slot_mapping] = v

    def _split(self, inputs: BatchInputs) -> "_Split":
        """With kernels: which tokens are decodes (1 query: the Triton decode kernel, batched) and
        which are prompt chunks (the per-sequence PyTorch path). Built once per step, not per layer:
        a mixed step with 80 decodes and one prompt chunk must not loop over 80 sequences 24 times."""
        if inputs.decode_only:
            return _Split(None, None, None)
        qsl = inputs.query_start_loc.tolist()
        q_lens = [b - a for a, b in zip(qsl, qsl[1:])]
        dec = [s for s, n in enumerate(q_lens) if n == 1]
        pre = [s for s, n in enumerate(q_lens) if n > 1]
        dev = inputs.input_ids.device
        decode = None
        if dec:
            seqs = torch.tensor(dec, device=dev)
            lens = inputs.seq_lens[seqs]
            decode = (torch.tensor([qsl[s] for s in dec], device=dev), inputs.block_tables[seqs], lens, int(lens.max()))
        tok = torch.tensor([t for s in pre for t in range(qsl[s], qsl[s + 1])], device=dev)
        pre_qsl = torch.tensor([0, *itertools.accumulate(q_lens[s] for s in pre)], device=dev, dtype=torch.int32)
        seqs = torch.tensor(pre, device=dev)
        sub = BatchInputs(inputs.input_ids[tok], inputs.positions[tok], inputs.slot_mapping[tok], pre_qsl,
                          inputs.seq_lens[seqs], inputs.block_tables[seqs], int(inputs.seq_lens[seqs].max()), False)
        return _Split(decode, tok, sub)

    def _mixed_attention(self, q, kc, vc, split: "_Split", scale: float) -> torch.Tensor:
        out = torch.empty_like(q)
        if split.decode is not None:
            idx, tables, lens, max_len = split.decode
            out[idx] = self.kernels.paged_attention(q[idx].contiguous(), kc, vc, tables, lens, scale, max_len)
        out[split.prefill] = paged_attention_reference(q[split.prefill], kc, vc, split.prefill_inputs, scale, self.attend)
        return out

    @torch.no_grad()
    def forward(self, inputs: BatchInputs) -> torch.Tensor:
        """Logits [num_seqs, vocab] (float32) at each scheduled sequence's last token."""
        m, c = self.model, self.model.config
        x = m.model.embed_tokens(inputs.input_ids)[None]                     # [1, N, hidden]
        cos, sin = self.rotary_cos_sin(inputs.positions[None], m.inv_freq, x.dtype)
        N = x.shape[1]
        split = self._split(inputs) if self.kernels is not None else None
        for i, layer in enumerate(m.model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, N, c.num_heads, c.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, N, c.num_kv_heads, c.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, N, c.num_kv_heads, c.head_dim)[0]
            q, k = self.apply_rotary(q, cos, sin)[0].transpose(0, 1), self.apply_rotary(k, cos, sin)[0].transpose(0, 1)
            self.write_cache(i, k.contiguous(), v.contiguous(), inputs.slot_mapping)
            kc, vc = self.kv_caches[i]
            if split is None:
                o = paged_attention_reference(q, kc, vc, inputs, attn.scale, self.attend)
            elif split.prefill is None:
                o = self.kernels.paged_attention(q.contiguous(), kc, vc, inputs.block_tables, inputs.seq_lens,
                                                 attn.scale, inputs.max_seq_len)
            else:
                o = self._mixed_attention(q, kc, vc, split, attn.scale)
            x = x + attn.o_proj(o.reshape(1, N, c.num_heads * c.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        last = inputs.query_start_loc[1:].long() - 1
        return m.lm_head(m.model.norm(x[0, last])).float()
