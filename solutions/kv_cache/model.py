"""A compact Llama/Qwen2-family decoder around your attention, and checkpoint loading. Given code.

    CausalLM
      model.embed_tokens   [vocab, hidden]
      model.layers[i]      input_layernorm -> self_attn (attention.py) -> + residual
                           post_attention_layernorm -> mlp (SwiGLU)    -> + residual
      model.norm
      lm_head              [vocab, hidden] (tied to embed_tokens in Qwen2.5-0.5B)

Parameter names equal transformers' so a checkpoint loads with load_state_dict as it is.

Naming a model (the three ways a course user does):
    load_model("path/to/folder")         a local transformers checkpoint (config.json + *.safetensors)
    load_model("Qwen/Qwen2.5-0.5B-Instruct")   a hub id (downloaded once by huggingface_hub)
    MODEL_PATH=... and load_model()      the environment variable, else the course's tiny default
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .kv_cache import KVCache
from .rope import inv_frequencies, rotary_cos_sin


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    eos_token_id: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    pad_token_id: int | None = None

    @classmethod
    def from_hf(cls, d: dict) -> "ModelConfig":
        """From a transformers config.json (Llama, Qwen2, Mistral-style; transformers 4 or 5)."""
        if d.get("model_type") not in ("llama", "qwen2", "mistral"):
            raise ValueError(f"model_type {d.get('model_type')!r}: the course model supports llama, qwen2, mistral")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", None) or d.get("rope_theta", 10000.0)
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = None
        eos = d.get("eos_token_id")
        heads = d["num_attention_heads"]
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
            num_layers=d["num_hidden_layers"], num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=rope,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            # Qwen2 has q/k/v biases without saying so in its config
            attention_bias=d.get("attention_bias", d.get("model_type") == "qwen2"),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            eos_token_id=[] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
            bos_token_id=d.get("bos_token_id"), pad_token_id=d.get("pad_token_id"))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # transformers' RMSNorm: normalise in fp32, round to x's dtype, then scale. F.rms_norm is
        # one fused kernel on a GPU (the same formula: x * rsqrt(mean(x^2) + eps)).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None, kv_valid=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, kv_valid)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderStack(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DecoderStack(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # RoPE frequencies: float32 whatever the model's dtype, so not a buffer that .to(dtype) would cast
        self.inv_freq = inv_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, caches: list[KVCache] | None = None,
                kv_valid: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits for T new tokens.

        input_ids, positions: [batch, T] int64.  caches: one KVCache per layer, or None.
        kv_valid: [batch, S] bool (see attention.py).  Returns float32 logits [batch, T, vocab],
        or [batch, 1, vocab] for the last token only with last_only=True (what generation needs:
        the full [batch, T, vocab] of a long prompt is gigabytes).
        """
        x = self.model.embed_tokens(input_ids)
        if self.inv_freq.device != x.device:
            self.inv_freq = self.inv_freq.to(x.device)
        cos, sin = rotary_cos_sin(positions, self.inv_freq, x.dtype)  # once, for every layer
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], kv_valid)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x)).float()

    def allocate_kv_caches(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None) -> list[KVCache]:
        """One KVCache per layer, [batch_size, num_kv_heads, max_len, head_dim] each."""
        c = self.config
        return [KVCache(batch_size, c.num_kv_heads, max_len, c.head_dim, dtype or self.dtype, self.device)
                for _ in range(c.num_layers)]


def resolve_checkpoint(name_or_path: str | os.PathLike | None = None) -> Path:
    """A local folder for a model name: a path, a hub id, $MODEL_PATH, or the course default."""
    name = name_or_path or os.environ.get("MODEL_PATH")
    if name is None:
        from llmsys.models import model_path  # the tiny random-weight model, built from data/

        return model_path()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if str(name).startswith((".", "/", "~")) or path.suffix:
        raise FileNotFoundError(f"model folder {name} does not exist")
    if "/" not in str(name):  # a course config name like "tiny-llama"
        from llmsys.models import model_path

        return model_path(str(name))
    from huggingface_hub import snapshot_download  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct

    return Path(snapshot_download(str(name), allow_patterns=["*.json", "*.safetensors", "tokenizer*"]))


def load_model(name_or_path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> CausalLM:
    """Load a transformers checkpoint into the course model (see the module docstring for names)."""
    from safetensors.torch import load_file

    from llmsys.models import empty_weights

    folder = resolve_checkpoint(name_or_path)
    config = ModelConfig.from_hf(json.loads((folder / "config.json").read_text()))
    with empty_weights():  # the checkpoint replaces every weight: no memory, no random init
        model = CausalLM(config)
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    if not state:
        raise FileNotFoundError(f"{folder} holds no *.safetensors weights")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model = model.to(device=device, dtype=dtype).eval()
    model.inv_freq = inv_frequencies(config.head_dim, config.rope_theta, config.rope_scaling).to(device)
    return model
