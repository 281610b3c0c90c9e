"""Every decoder parameter declared once, as data.

A :class:`ParamDecl` names one leaf of the parameter pytree (``("layers", "wq")``), its
LOGICAL axes (``("layers", "embed", "heads")``) and the config flag that makes it exist.
Everything else derives from :data:`PARAMS`:

* the shapes (:func:`param_shapes`): each logical axis' size is a product of config fields
  (:data:`AXIS_FIELDS`);
* the tensor-parallel specs (:func:`sri_jax.parallel.mesh.param_specs`): logical axes map to
  mesh axes by the rules table :data:`sri_jax.parallel.mesh.LOGICAL_RULES`;
* the random init (:func:`random_params`) and the LoRA targets (:data:`LORA_TARGETS`).

Checkpoint names live in :mod:`sri_jax.weights.name_maps` (one table per file naming, with a
transform per tensor where the stored layout differs). Adding a family is a config, a name map
and, where needed, a transform (docs/models.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp

from .config import ModelConfig

__all__ = ["ParamDecl", "PARAMS", "AXIS_FIELDS", "LORA_TARGETS", "declared", "axis_size",
           "shard_unit", "param_shapes", "random_params"]

# Logical axis -> the config fields whose product is its size; the FIRST field is the unit a
# mesh axis must divide to split it (whole heads, not head_dim slices).
AXIS_FIELDS: dict[str, tuple[str, ...]] = {
    "layers": ("num_layers",),
    "vocab": ("vocab_size",),
    "embed": ("hidden_size",),
    "table_embed": ("hidden_size",),   # the hidden axis of the vocabulary tables
    "mlp": ("intermediate_size",),
    "heads": ("num_heads", "head_dim"),
    "kv_heads": ("num_kv_heads", "head_dim"),
    "head_dim": ("head_dim",),
}


@dataclass(frozen=True)
class ParamDecl:
    """One parameter: pytree path, logical axes, presence condition, LoRA group.

    when  a boolean ModelConfig field that must be true ("!field": must be false); None: always.
    lora  "attention" / "mlp" for the projections LoRA may target; None otherwise."""

    path: tuple[str, ...]
    axes: tuple[str, ...]
    when: Optional[str] = None
    lora: Optional[str] = None

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def is_norm(self) -> bool:
        return self.name.endswith("norm")

    def present(self, cfg: ModelConfig) -> bool:
        if self.when is None:
            return True
        flag = self.when.lstrip("!")
        return bool(getattr(cfg, flag)) != self.when.startswith("!")

    def shape(self, cfg: ModelConfig) -> tuple[int, ...]:
        return tuple(axis_size(cfg, a) for a in self.axes)


def _layer(name, *axes, **kw) -> ParamDecl:
    return ParamDecl(("layers", name), ("layers",) + axes, **kw)


# Layout: PyTorch [out, in] weights transposed to [in, out]; layers stacked on axis 0.
# The order is the random-init order (keep it: seeds reproduce the same weights).
PARAMS: tuple[ParamDecl, ...] = (
    ParamDecl(("embed",), ("vocab", "table_embed")),
    _layer("attn_norm", "embed"),
    _layer("wq", "embed", "heads", lora="attention"),
    _layer("wk", "embed", "kv_heads", lora="attention"),
    _layer("wv", "embed", "kv_heads", lora="attention"),
    _layer("wo", "heads", "embed", lora="attention"),
    _layer("mlp_norm", "embed"),
    _layer("w_gate", "embed", "mlp", lora="mlp"),
    _layer("w_up", "embed", "mlp", lora="mlp"),
    _layer("w_down", "mlp", "embed", lora="mlp"),
    _layer("bq", "heads", when="attention_bias"),
    _layer("bk", "kv_heads", when="attention_bias"),
    _layer("bv", "kv_heads", when="attention_bias"),
    _layer("post_attn_norm", "embed", when="sandwich_norms"),
    _layer("post_mlp_norm", "embed", when="sandwich_norms"),
    _layer("q_norm", "head_dim", when="qk_norm"),
    _layer("k_norm", "head_dim", when="qk_norm"),
    ParamDecl(("final_norm",), ("embed",)),
    ParamDecl(("lm_head",), ("table_embed", "vocab"), when="!tie_word_embeddings"),
)

LORA_TARGETS: dict[str, tuple[str, ...]] = {
    g: tuple(p.name for p in PARAMS if p.lora == g) for g in ("attention", "mlp")}


def declared(cfg: ModelConfig) -> tuple[ParamDecl, ...]:
    """The parameters ``cfg`` has, in declaration order."""
    return tuple(p for p in PARAMS if p.present(cfg))


def axis_size(cfg: ModelConfig, axis: str) -> int:
    return math.prod(int(getattr(cfg, f)) for f in AXIS_FIELDS[axis])


def shard_unit(cfg: ModelConfig, axis: str) -> tuple[str, int]:
    """(config field, value) a mesh axis must divide to split ``axis``."""
    field = AXIS_FIELDS[axis][0]
    return field, int(getattr(cfg, field))


def _nest(pairs) -> dict:
    out: dict = {}
    for path, value in pairs:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


def param_shapes(cfg: ModelConfig) -> dict:
    """The exact pytree of parameter shapes :func:`sri_jax.models.decoder.forward` expects."""
    return _nest((p.path, p.shape(cfg)) for p in declared(cfg))


def random_params(cfg: ModelConfig, seed: int = 0, dtype=jnp.float32,
                init_std: float = 0.02) -> dict:
    """Random params (smoke tests, tiny checkpoints): N(0, init_std) weights, identity norms
    (w = 1, or 0 under the (1 + w) norm). Key i is ``fold_in(key(seed), i)`` for the i-th
    non-norm parameter in declaration order."""
    root, i, pairs = jax.random.key(seed), 0, []
    for p in declared(cfg):
        if p.is_norm:
            value = jnp.full(p.shape(cfg), 0 if cfg.norm_unit_offset else 1, dtype)
        else:
            k = jax.random.fold_in(root, i)
            i += 1
            value = (init_std * jax.random.normal(k, p.shape(cfg))).astype(dtype)
        pairs.append((p.path, value))
    return _nest(pairs)
