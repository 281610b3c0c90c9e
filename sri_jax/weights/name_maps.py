"""Checkpoint name maps as data, and the load plan that validates a checkpoint against a config.

One mechanism for every file naming (HF safetensors, LLaDA, Gemma, llama.cpp GGUF). A
:class:`NameMap` is a table of :class:`Rule`\\ s. Each rule is a checkpoint tensor-name
template (``{layer}`` stands for the block index), the target path in the parameter pytree
(declared in :mod:`sri_jax.models.params`) and a transform (:data:`TRANSFORMS`) from the
stored layout to ours::

    Rule("model.layers.{layer}.self_attn.q_proj.weight", ("layers", "wq"), "transpose")

PyTorch ``nn.Linear`` stores ``[out, in]``; our params are ``[in, out]``, hence "transpose".
GGUF's Q/K row permutation and Gemma's stored 1 + w norms are transforms too
(:data:`GGUF_LLAMA_MAP`, :data:`GGUF_GEMMA3_MAP`). Layered targets are stacked on a leading ``[num_layers]`` axis by the loader.

:func:`plan_load` matches every stored tensor against the map and the config's declared
shapes (:func:`sri_jax.models.params.declared`) and collects EVERY problem (unknown
tensors, missing tensors, wrong shapes, unsupported dtypes), each with the file it is in, into
one :class:`CheckpointMismatchError`, so a bad checkpoint is diagnosed in one run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np

from ..models.config import ModelConfig
from ..models.params import declared

__all__ = [
    "Rule", "NameMap", "TensorSource", "PlanEntry", "LoadPlan", "CheckpointMismatchError",
    "TRANSFORMS", "HF_DECODER_MAP", "LLADA_MAP", "GEMMA_MAP", "GGUF_MAP", "GGUF_LLAMA_MAP",
    "GGUF_GEMMA3_MAP", "NAME_MAPS", "name_map_for", "plan_load", "param_paths", "permute_qk",
    "unpermute_qk",
]


# ----------------------------------------------------------------------------- transforms


class Transform(NamedTuple):
    apply: Callable[[np.ndarray, ModelConfig], np.ndarray]  # stored array -> our layout
    stored_shape: Callable[[tuple], tuple]          # our (per-layer) shape -> stored shape


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation (rows ``(head, half, pair)`` -> ``(head, pair, half)``)
    on a PyTorch-layout ``[out, ...]`` array. Inverse of :func:`unpermute_qk`."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo :func:`permute_qk`: rows ``(head, pair, half)`` -> ``(head, half, pair)``."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot un-permute a tensor with {rows} rows into {n_head} heads")
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _same(s):
    return tuple(s)


def _reversed(s):
    return tuple(s)[::-1]


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(lambda a, cfg: a, _same),
    # PyTorch nn.Linear [out, in] -> [in, out] (a view)
    "transpose": Transform(lambda a, cfg: a.T, _reversed),
    # llama.cpp's converter permuted the Q/K rows of llama-arch files (interleaved RoPE)
    "unpermute_q": Transform(lambda a, cfg: unpermute_qk(a, cfg.num_heads), _same),
    "unpermute_k": Transform(lambda a, cfg: unpermute_qk(a, cfg.num_kv_heads), _same),
    "unpermute_q_transpose": Transform(lambda a, cfg: unpermute_qk(a, cfg.num_heads).T,
                                       _reversed),
    "unpermute_k_transpose": Transform(lambda a, cfg: unpermute_qk(a, cfg.num_kv_heads).T,
                                       _reversed),
    # llama.cpp stores Gemma's RMSNorm weights as 1 + w; the decoder applies (1 + w) itself
    "minus_one": Transform(lambda a, cfg: a.astype(np.float32) - 1, _same),
}


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One checkpoint tensor name (``{layer}`` = block index) -> one params path."""

    template: str
    target: tuple[str, ...]
    transform: str = "identity"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r} in rule {self.template!r} "
                             f"(known: {sorted(TRANSFORMS)})")

    @property
    def layered(self) -> bool:
        return "{layer}" in self.template

    @property
    def regex(self) -> re.Pattern:
        parts = self.template.split("{layer}")
        body = r"(?P<layer>0|[1-9][0-9]*)".join(re.escape(p) for p in parts)
        return re.compile(body + r"\Z")

    def name(self, layer: Optional[int] = None) -> str:
        return self.template.format(layer=layer) if self.layered else self.template


@dataclass(frozen=True)
class NameMap:
    """A family's checkpoint naming.

    rules      one rule per parameter (biases included; they are only expected when the
               config has ``attention_bias``).
    ignore     regexes of stored tensors that are not parameters (e.g. old RoPE buffers).
    """

    name: str
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    _compiled: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_compiled", tuple((r.regex, r) for r in self.rules))
        targets = [r.target for r in self.rules]
        if len(set(targets)) != len(targets):
            raise ValueError(f"name map {self.name!r} maps two rules to the same target")

    def match(self, tensor_name: str) -> Optional[tuple[Rule, Optional[int]]]:
        """(rule, layer index or None) for a stored tensor name, or None when unknown."""
        for rx, rule in self._compiled:
            m = rx.match(tensor_name)
            if m:
                return rule, (int(m.group("layer")) if rule.layered else None)
        return None

    def is_ignored(self, tensor_name: str) -> bool:
        return any(re.fullmatch(p, tensor_name) for p in self.ignore)

    def rule_for(self, target: tuple[str, ...]) -> Rule:
        for r in self.rules:
            if r.target == target:
                return r
        raise KeyError(f"name map {self.name!r} has no rule for params path {target}")

    def checkpoint_name(self, target: tuple[str, ...], layer: Optional[int] = None) -> str:
        return self.rule_for(target).name(layer)

    def with_transforms(self, name: str, **transforms: str) -> "NameMap":
        """The same names under ``name``, with the transform of each params leaf named in
        ``transforms`` replaced (e.g. ``wq="unpermute_q_transpose"``)."""
        leaves = {r.target[-1] for r in self.rules}
        unknown = sorted(set(transforms) - leaves)
        if unknown:
            raise ValueError(f"name map {self.name!r} has no rule for {unknown}")
        rules = tuple(Rule(r.template, r.target, transforms.get(r.target[-1], r.transform))
                      for r in self.rules)
        return NameMap(name, rules, self.ignore)


def _L(template, *target, transform="identity"):
    return Rule(template, tuple(target), transform)


# HF Llama / SmolLM2 / Qwen2 / Qwen2.5 / Dream: the `LlamaForCausalLM` naming.
HF_DECODER_MAP = NameMap("hf-llama-qwen2", rules=(
    _L("model.embed_tokens.weight", "embed"),
    _L("model.layers.{layer}.input_layernorm.weight", "layers", "attn_norm"),
    _L("model.layers.{layer}.self_attn.q_proj.weight", "layers", "wq", transform="transpose"),
    _L("model.layers.{layer}.self_attn.k_proj.weight", "layers", "wk", transform="transpose"),
    _L("model.layers.{layer}.self_attn.v_proj.weight", "layers", "wv", transform="transpose"),
    _L("model.layers.{layer}.self_attn.o_proj.weight", "layers", "wo", transform="transpose"),
    _L("model.layers.{layer}.self_attn.q_proj.bias", "layers", "bq"),
    _L("model.layers.{layer}.self_attn.k_proj.bias", "layers", "bk"),
    _L("model.layers.{layer}.self_attn.v_proj.bias", "layers", "bv"),
    _L("model.layers.{layer}.post_attention_layernorm.weight", "layers", "mlp_norm"),
    _L("model.layers.{layer}.mlp.gate_proj.weight", "layers", "w_gate", transform="transpose"),
    _L("model.layers.{layer}.mlp.up_proj.weight", "layers", "w_up", transform="transpose"),
    _L("model.layers.{layer}.mlp.down_proj.weight", "layers", "w_down", transform="transpose"),
    _L("model.norm.weight", "final_norm"),
    _L("lm_head.weight", "lm_head", transform="transpose"),
), ignore=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",))

# LLaDA (GSAI-ML/LLaDA-8B-Instruct, LLaDA-1.5): its own OLMo-derived naming.
# ff_proj is the SiLU gate, up_proj the linear branch, blocks.N.ff_out the down projection;
# transformer.ff_out (no block) is the LM head.
LLADA_MAP = NameMap("llada", rules=(
    _L("model.transformer.wte.weight", "embed"),
    _L("model.transformer.blocks.{layer}.attn_norm.weight", "layers", "attn_norm"),
    _L("model.transformer.blocks.{layer}.q_proj.weight", "layers", "wq", transform="transpose"),
    _L("model.transformer.blocks.{layer}.k_proj.weight", "layers", "wk", transform="transpose"),
    _L("model.transformer.blocks.{layer}.v_proj.weight", "layers", "wv", transform="transpose"),
    _L("model.transformer.blocks.{layer}.attn_out.weight", "layers", "wo",
       transform="transpose"),
    _L("model.transformer.blocks.{layer}.q_proj.bias", "layers", "bq"),
    _L("model.transformer.blocks.{layer}.k_proj.bias", "layers", "bk"),
    _L("model.transformer.blocks.{layer}.v_proj.bias", "layers", "bv"),
    _L("model.transformer.blocks.{layer}.ff_norm.weight", "layers", "mlp_norm"),
    _L("model.transformer.blocks.{layer}.ff_proj.weight", "layers", "w_gate",
       transform="transpose"),
    _L("model.transformer.blocks.{layer}.up_proj.weight", "layers", "w_up",
       transform="transpose"),
    _L("model.transformer.blocks.{layer}.ff_out.weight", "layers", "w_down",
       transform="transpose"),
    _L("model.transformer.ln_f.weight", "final_norm"),
    _L("model.transformer.ff_out.weight", "lm_head", transform="transpose"),
))

# Gemma-2 / Gemma-3 text (Gemma2ForCausalLM, Gemma3ForCausalLM): Llama's names, but
# post_attention_layernorm is the norm AFTER attention (sandwich) and the MLP's pre-norm is
# pre_feedforward_layernorm; q_norm / k_norm only in Gemma-3. Norm weights are stored as w
# (the decoder applies 1 + w).
GEMMA_MAP = NameMap("hf-gemma", rules=tuple(
    r for r in HF_DECODER_MAP.rules if r.target[-1] not in ("mlp_norm", "bq", "bk", "bv")) + (
    _L("model.layers.{layer}.post_attention_layernorm.weight", "layers", "post_attn_norm"),
    _L("model.layers.{layer}.pre_feedforward_layernorm.weight", "layers", "mlp_norm"),
    _L("model.layers.{layer}.post_feedforward_layernorm.weight", "layers", "post_mlp_norm"),
    _L("model.layers.{layer}.self_attn.q_norm.weight", "layers", "q_norm"),
    _L("model.layers.{layer}.self_attn.k_norm.weight", "layers", "k_norm"),
))

# llama.cpp GGUF files (every architecture names its tensors alike; ``blk.N.``). qwen2-arch
# files store the HF layout; llama-arch files have Q/K rows permuted; gemma3-arch files store
# every norm weight as 1 + w.
GGUF_MAP = NameMap("gguf", rules=(
    _L("token_embd.weight", "embed"),
    _L("blk.{layer}.attn_norm.weight", "layers", "attn_norm"),
    _L("blk.{layer}.attn_q.weight", "layers", "wq", transform="transpose"),
    _L("blk.{layer}.attn_k.weight", "layers", "wk", transform="transpose"),
    _L("blk.{layer}.attn_v.weight", "layers", "wv", transform="transpose"),
    _L("blk.{layer}.attn_output.weight", "layers", "wo", transform="transpose"),
    _L("blk.{layer}.attn_q.bias", "layers", "bq"),
    _L("blk.{layer}.attn_k.bias", "layers", "bk"),
    _L("blk.{layer}.attn_v.bias", "layers", "bv"),
    _L("blk.{layer}.ffn_norm.weight", "layers", "mlp_norm"),  # Gemma: the pre-MLP norm
    _L("blk.{layer}.ffn_gate.weight", "layers", "w_gate", transform="transpose"),
    _L("blk.{layer}.ffn_up.weight", "layers", "w_up", transform="transpose"),
    _L("blk.{layer}.ffn_down.weight", "layers", "w_down", transform="transpose"),
    _L("blk.{layer}.post_attention_norm.weight", "layers", "post_attn_norm"),
    _L("blk.{layer}.post_ffw_norm.weight", "layers", "post_mlp_norm"),
    _L("blk.{layer}.attn_q_norm.weight", "layers", "q_norm"),
    _L("blk.{layer}.attn_k_norm.weight", "layers", "k_norm"),
    _L("output_norm.weight", "final_norm"),
    _L("output.weight", "lm_head", transform="transpose"),
), ignore=(r"rope_freqs\.weight", r"blk\.\d+\.attn_rot_embd.*"))
GGUF_LLAMA_MAP = GGUF_MAP.with_transforms(
    "gguf-llama", wq="unpermute_q_transpose", wk="unpermute_k_transpose", bq="unpermute_q",
    bk="unpermute_k")
GGUF_GEMMA3_MAP = GGUF_MAP.with_transforms(
    "gguf-gemma3", **dict.fromkeys(("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm",
                                     "q_norm", "k_norm", "final_norm"), "minus_one"))

NAME_MAPS: dict[str, NameMap] = {
    "llama": HF_DECODER_MAP, "qwen2": HF_DECODER_MAP, "dream": HF_DECODER_MAP,
    "llada": LLADA_MAP, "gemma2": GEMMA_MAP, "gemma3": GEMMA_MAP,
}


def name_map_for(cfg: ModelConfig) -> NameMap:
    try:
        return NAME_MAPS[cfg.family]
    except KeyError:
        raise ValueError(f"no checkpoint name map for family {cfg.family!r} "
                         f"(known: {sorted(NAME_MAPS)})") from None


# ----------------------------------------------------------------------------- plan


class TensorSource(NamedTuple):
    """Where a stored tensor lives: its name, file, safetensors dtype code and shape."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]


class PlanEntry(NamedTuple):
    layer: Optional[int]
    source: TensorSource
    transform: str


@dataclass
class LoadPlan:
    """entries: params path -> the stored tensors filling it (one per layer when layered).
    shapes: params path -> full target shape. tied_head: a stored output head that the config
    ties to the embedding (the loader checks it equals the embedding). ignored: skipped names."""

    entries: dict[tuple[str, ...], list[PlanEntry]]
    shapes: dict[tuple[str, ...], tuple[int, ...]]
    tied_head: Optional[TensorSource] = None
    ignored: list[str] = field(default_factory=list)
    cfg: Optional[ModelConfig] = None  # the transforms' sizes (Q/K head counts)

    def read(self, entry: PlanEntry, get: Callable[[TensorSource], np.ndarray]) -> np.ndarray:
        """One stored tensor in our layout: ``get(source)`` through the entry's transform."""
        return TRANSFORMS[entry.transform].apply(get(entry.source), self.cfg)


class CheckpointMismatchError(ValueError):
    """Every way a checkpoint disagrees with its config, reported at once."""

    def __init__(self, message, *, unexpected=(), missing=(), wrong_shape=(), bad_dtype=()):
        super().__init__(message)
        self.unexpected = list(unexpected)
        self.missing = list(missing)
        self.wrong_shape = list(wrong_shape)
        self.bad_dtype = list(bad_dtype)


FLOAT_CODES = ("BF16", "F16", "F32", "F64")


def param_paths(shapes: dict, prefix=()) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flatten a nested dict of shapes into {path tuple: shape}."""
    out = {}
    for k, v in shapes.items():
        if isinstance(v, dict):
            out.update(param_paths(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = tuple(v)
    return out


def _fmt_shape(s) -> str:
    return "[" + ", ".join(str(int(x)) for x in s) + "]"


_SHOWN = 30


def _section(title: str, lines: list[str], fix: str, limit: int = _SHOWN,
             total: Optional[int] = None) -> str:
    total = len(lines) if total is None else total
    shown = lines[:limit]
    more = [f"    ... and {total - len(shown)} more"] if total > len(shown) else []
    return "\n".join([f"  {title} ({total}):"] + [f"    {ln}" for ln in shown] + more
                     + [f"    fix: {fix}"])


# The config.json keys a fix names: LLaDA's own, else Hugging Face's.
_CONFIG_KEYS = {"llada": ("n_layers", "weight_tying", "include_qkv_bias")}
_HF_CONFIG_KEYS = ("num_hidden_layers", "tie_word_embeddings", "attention_bias")


@dataclass
class _Matching:
    """The state of :func:`plan_load`: the entries accepted so far and every problem found."""

    cfg: ModelConfig
    name_map: NameMap
    config_file: str
    dtypes: Optional[tuple[str, ...]]
    shapes: dict[tuple[str, ...], tuple[int, ...]]
    entries: dict = field(default_factory=dict)  # path -> {layer or None: PlanEntry}
    unexpected: list = field(default_factory=list)
    wrong_shape: list = field(default_factory=list)
    bad_dtype: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # the first _SHOWN only (memory stays bounded)
    n_missing: int = 0
    tied_head: Optional[TensorSource] = None

    def __post_init__(self):
        self.entries = {p: {} for p in self.shapes}

    def add(self, name: str, src: TensorSource) -> None:
        """Match one stored tensor: accept it, set it aside, or record why not."""
        if self.name_map.is_ignored(name):
            self.ignored.append(name)
            return
        hit = self.name_map.match(name)
        if hit is not None and hit[0].target == ("lm_head",) and ("lm_head",) not in \
                self.shapes and self.cfg.tie_word_embeddings:
            self.tied_head = src
            return
        why = self._why_unexpected(hit)
        if why is not None:
            self.unexpected.append(f"{name}  (in {src.file}; {why})")
            return
        rule, layer = hit
        key = layer if rule.layered else None
        if self._layout_ok(name, src, rule):
            self.entries[rule.target][key] = PlanEntry(key, src, rule.transform)

    def _why_unexpected(self, hit) -> Optional[str]:
        """Why a matched name fills no parameter of the config (None: it does)."""
        if hit is None:
            return f"no {self.name_map.name} parameter has this name"
        rule, layer = hit
        path, n = rule.target, self.cfg.num_layers
        if path not in self.shapes:
            return ("the config has no q/k/v bias (attention_bias / include_qkv_bias is false)"
                    if path[-1] in ("bq", "bk", "bv") else
                    "the config does not use this parameter")
        if rule.layered and layer >= n:
            return f"block {layer} but {self.config_file} says num_layers={n}"
        key = layer if rule.layered else None
        if key in self.entries[path]:
            other = self.entries[path][key].source
            return f"duplicates {other.name} in {other.file}"
        return None

    def _layout_ok(self, name: str, src: TensorSource, rule: Rule) -> bool:
        """Shape and dtype of a stored tensor (every problem recorded)."""
        shape = self.shapes[rule.target]
        want = TRANSFORMS[rule.transform].stored_shape(shape[1:] if rule.layered else shape)
        ok = True
        if tuple(src.shape) != want:
            self.wrong_shape.append(f"{name}  (in {src.file}): stored {_fmt_shape(src.shape)}, "
                                    f"config expects {_fmt_shape(want)}")
            ok = False
        if self.dtypes is not None and src.dtype not in self.dtypes:
            self.bad_dtype.append(f"{name}  (in {src.file}): dtype {src.dtype}; only "
                                  f"{'/'.join(self.dtypes)} weights are supported")
            ok = False
        return ok

    def _keys(self, path) -> list:
        return list(range(self.cfg.num_layers)) if self.name_map.rule_for(path).layered \
            else [None]

    def find_missing(self, tensors: Mapping[str, TensorSource]) -> None:
        for path, got in self.entries.items():
            rule = self.name_map.rule_for(path)
            for k in self._keys(path):
                if k in got or rule.name(k) in tensors:  # present but rejected: not "missing"
                    continue
                self.n_missing += 1
                if len(self.missing) < _SHOWN:
                    self.missing.append(f"{rule.name(k)}  (params {'/'.join(path)}"
                                        + (f" block {k})" if k is not None else ")"))

    def problems(self) -> int:
        return len(self.unexpected) + self.n_missing + len(self.wrong_shape) + len(self.bad_dtype)

    def error(self, where: str) -> CheckpointMismatchError:
        cfg, cf = self.cfg, self.config_file
        k_layers, k_tie, k_bias = _CONFIG_KEYS.get(cfg.family, _HF_CONFIG_KEYS)
        sections = (  # (title, lines, fix, total)
            ("tensors with the wrong shape", self.wrong_shape,
             f"use the {cf} that was published with these weights (hidden / intermediate "
             "size, head counts, head_dim, vocab size must match), or re-download the shard "
             "if the file is damaged", None),
            ("missing tensors", self.missing,
             f"re-download the incomplete shards, or fix {k_layers} / {k_tie} / {k_bias} in "
             f"{cf}", self.n_missing),
            ("unexpected tensors", self.unexpected,
             f"make sure the weights are a {cfg.family} checkpoint and that {cf} matches them "
             f"(model_type, {k_layers}, {k_bias}, {k_tie})", None),
            ("unsupported dtypes", self.bad_dtype,
             "quantized checkpoints are not supported; use the bf16/fp16/fp32 release", None))
        head = (f"{where} does not match its {cf} ({cfg.family} config: {cfg.num_layers} "
                f"layers, hidden {cfg.hidden_size}, intermediate {cfg.intermediate_size}, "
                f"heads {cfg.num_heads}/{cfg.num_kv_heads}x{cfg.head_dim}, vocab "
                f"{cfg.vocab_size}, tied={cfg.tie_word_embeddings}, "
                f"attention_bias={cfg.attention_bias}): {self.problems()} problem(s)")
        parts = [head] + [_section(title, lines, fix, total=total)
                          for title, lines, fix, total in sections if lines]
        return CheckpointMismatchError("\n".join(parts), unexpected=self.unexpected,
                                       missing=self.missing, wrong_shape=self.wrong_shape,
                                       bad_dtype=self.bad_dtype)

    def plan(self) -> LoadPlan:
        out = {path: [got[k] for k in self._keys(path)] for path, got in self.entries.items()}
        return LoadPlan(out, self.shapes, self.tied_head, self.ignored, self.cfg)


def plan_load(cfg: ModelConfig, name_map: NameMap, tensors: Mapping[str, TensorSource], *,
              where: str = "checkpoint", config_file: str = "config.json",
              dtypes: Optional[tuple[str, ...]] = FLOAT_CODES) -> LoadPlan:
    """Match stored tensors to the params of ``cfg``; raise one error listing every problem.

    ``tensors`` maps each stored name to its :class:`TensorSource`; ``where`` names the
    checkpoint (directory) in messages; ``dtypes``: the accepted dtype codes (None: any, for
    formats the reader dequantizes).
    """
    m = _Matching(cfg, name_map, config_file, dtypes,
                  {p.path: p.shape(cfg) for p in declared(cfg)})
    for name in sorted(tensors):
        m.add(name, tensors[name])
    m.find_missing(tensors)
    if m.problems():
        raise m.error(where)
    return m.plan()
