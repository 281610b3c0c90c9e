"""Model configurations as data: one frozen dataclass covers every supported family.

The decoder in :mod:`sri_jax.models.decoder` reads nothing but these fields, so adding a
family means writing a config (and a checkpoint name map), never a new model class.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Optional

FAMILIES = ("llama", "qwen2", "llada", "dream", "gemma2", "gemma3")
LAYER_TYPES = ("full_attention", "sliding_attention")
ACTIVATIONS = ("silu", "gelu_tanh")
# Upper bounds on the sizes (far above any released model; they keep a hostile config from
# making the loader or the decoder allocate without limit).
LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 20,
          "num_layers": 1024, "num_heads": 1024, "num_kv_heads": 1024, "head_dim": 1024,
          "max_position_embeddings": 1 << 24}


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling: Llama-3.1 style ("llama3"), or "linear" (every inverse
    frequency divided by ``factor``; Gemma-3's global layers). The llama3 fields are unused
    by "linear"."""

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


TOKEN_ID_FIELDS = ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id",
                   "eot_token_id")
POSITIVE_FIELDS = ("rms_norm_eps", "rope_theta")
OPTIONAL_POSITIVE_FIELDS = ("query_pre_attn_scalar", "attn_logit_softcap",
                            "final_logit_softcap", "rope_local_theta")


def _int_in(v, lo: int, hi: int) -> bool:
    """``v`` is an integer (not a bool) with ``lo <= v < hi``."""
    try:
        return not isinstance(v, bool) and lo <= operator.index(v) < hi
    except TypeError:
        return False


def _positive(v) -> bool:
    """``v`` is a finite positive int or float (not a bool)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and \
        0 < float(v) < float("inf")


def _failing(cfg, names, ok, what: str) -> list[str]:
    return [f"{n} must be {what}, got {getattr(cfg, n)!r}" for n in names
            if not ok(getattr(cfg, n))]


def _value_problems(cfg: "ModelConfig") -> tuple[list[str], bool]:
    """The family, the sizes (each within :data:`LIMITS`), the numbers and the token ids;
    and whether every size is usable."""
    problems = [] if cfg.family in FAMILIES else [
        f"family {cfg.family!r} is not one of {FAMILIES}"]
    sizes = [f"{name} must be an integer in 1..{top}, got {getattr(cfg, name)!r}"
             for name, top in LIMITS.items() if not _int_in(getattr(cfg, name), 1, top + 1)]
    problems += sizes + _failing(cfg, POSITIVE_FIELDS, _positive, "a finite positive number")
    problems += _failing(cfg, TOKEN_ID_FIELDS, lambda v: v is None or _int_in(v, 0, 1 << 31),
                         "a token id >= 0 or None")
    return problems, not sizes


def _structure_problems(cfg: "ModelConfig") -> list[str]:
    """How the (valid) sizes fit together: heads, RoPE, activation, layer types, window."""
    problems = []
    if cfg.num_heads % cfg.num_kv_heads:
        problems.append(f"num_heads {cfg.num_heads} is not a multiple of "
                        f"num_kv_heads {cfg.num_kv_heads}")
    if cfg.head_dim % 2:
        problems.append(f"head_dim {cfg.head_dim} must be even for RoPE")
    problems += _failing(cfg, OPTIONAL_POSITIVE_FIELDS, lambda v: v is None or _positive(v),
                         "a finite positive number or None")
    if cfg.mlp_activation not in ACTIVATIONS:
        problems.append(f"mlp_activation {cfg.mlp_activation!r} is not one of {ACTIVATIONS}")
    if cfg.layer_types is not None:
        if len(cfg.layer_types) != cfg.num_layers or \
                any(t not in LAYER_TYPES for t in cfg.layer_types):
            problems.append(f"layer_types must list one of {LAYER_TYPES} per layer "
                            f"({cfg.num_layers}), got {cfg.layer_types!r}")
        elif "sliding_attention" in cfg.layer_types and cfg.sliding_window is None:
            problems.append("layer_types has sliding_attention layers but "
                            "sliding_window is None")
    v = cfg.sliding_window
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        problems.append(f"sliding_window must be a positive integer or None, got {v!r}")
    if any(cfg.sliding_layers) and not cfg.causal:
        problems.append("sliding-window layers need a causal model")
    if not cfg.causal and cfg.mask_token_id is None:
        problems.append("a diffusion (non-causal) model needs mask_token_id")
    return problems


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one decoder-only transformer (hashable: usable as a jit static arg).

    family:            "llama" (Llama-3, SmolLM2), "qwen2", "llada" or "dream".
    causal:            True for AR models; False for masked-diffusion models (LLaDA, Dream).
    attention_bias:    q/k/v projection biases (Qwen2, Dream).
    rope_fp32_apply:   rotate q/k in fp32 and cast back (LLaDA's ``rope_full_precision``);
                       otherwise cos/sin are cast to the activation dtype first (HF Llama/Qwen2).
    logits_shift:      the sampler reads the prediction for position i from position i-1
                       (Dream). The forward pass itself always returns ordinary logits.

    Gemma-2 / Gemma-3 (defaults give the Llama block):
    norm_unit_offset:  RMSNorm scales by (1 + w), multiplied in fp32 before the cast back.
    sandwich_norms:    extra norms after attention and after the MLP (``post_attn_norm``,
                       ``post_mlp_norm``) before each residual add.
    qk_norm:           RMSNorm over head_dim on q and k (``q_norm``, ``k_norm``), before RoPE.
    scale_embeddings:  embeddings times sqrt(hidden_size), the factor cast to the weight dtype.
    mlp_activation:    "silu" (SwiGLU) or "gelu_tanh" (GeGLU with the tanh GELU).
    query_pre_attn_scalar: attention scores are scaled by its ^-0.5 (None: head_dim^-0.5).
    attn_logit_softcap / final_logit_softcap: ``cap * tanh(x / cap)`` on the attention
                       scores (before the mask) / on the logits; None for none.
    sliding_window:    a "sliding_attention" layer's query sees the keys at most
                       sliding_window - 1 real tokens back (itself included: W keys).
    layer_types:       per layer "full_attention" or "sliding_attention" (None: all full).
    rope_local_theta:  RoPE base of the sliding layers, unscaled (Gemma-3's
                       rope_local_base_freq); None: they use the global tables.
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    rope_fp32_apply: bool = False
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    causal: bool = True
    max_position_embeddings: int = 4096
    mask_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    eot_token_id: Optional[int] = None
    logits_shift: bool = False
    norm_unit_offset: bool = False
    sandwich_norms: bool = False
    qk_norm: bool = False
    scale_embeddings: bool = False
    mlp_activation: str = "silu"
    query_pre_attn_scalar: Optional[float] = None
    attn_logit_softcap: Optional[float] = None
    final_logit_softcap: Optional[float] = None
    sliding_window: Optional[int] = None
    layer_types: Optional[tuple] = None
    rope_local_theta: Optional[float] = None

    def __post_init__(self):
        if self.layer_types is not None and not isinstance(self.layer_types, tuple):
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        problems, sizes_ok = _value_problems(self)
        if sizes_ok:
            problems += _structure_problems(self)
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def sliding_layers(self) -> tuple:
        """Per layer: True where the attention is windowed."""
        types = self.layer_types or ("full_attention",) * self.num_layers
        return tuple(t == "sliding_attention" for t in types)

    @property
    def kind(self) -> str:
        return "autoregressive" if self.causal else "diffusion"

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    def resolve_layer(self, layer) -> int:
        """Map "last" / "middle" / "first" / an index (negative allowed) to a block index.

        Index i selects HF ``hidden_states[i+1]``: the residual stream after block i, and for
        the last block (``num_layers - 1``, i.e. "last") the final-norm output.
        """
        n = self.num_layers
        if isinstance(layer, str):
            table = {"last": n - 1, "middle": n // 2, "first": 0}
            if layer not in table:
                raise ValueError(f"layer {layer!r}: use 'last', 'middle', 'first' or an int")
            return table[layer]
        idx = int(layer)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise ValueError(f"layer {layer} out of range for a {n}-layer model "
                             f"(valid: {-n}..{n - 1})")
        return idx


# Published architectures (sizes from the releases; used by the registry and the docs).
LLADA_8B = ModelConfig(
    family="llada", vocab_size=126464, hidden_size=4096, intermediate_size=12288,
    num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128, rms_norm_eps=1e-5,
    rope_theta=500000.0, rope_fp32_apply=True, causal=False, max_position_embeddings=4096,
    mask_token_id=126336, bos_token_id=126080, eos_token_id=126081, pad_token_id=126081,
    eot_token_id=126348)

SMOLLM2_135M = ModelConfig(
    family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
    num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5,
    rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=8192,
    bos_token_id=1, eos_token_id=2, pad_token_id=2)
