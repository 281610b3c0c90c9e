"""LoRA adapters over the stacked decoder params, as pure functions.

The decoder keeps every layer's weights stacked on a leading axis in the ``[in, out]``
layout (see :mod:`sri_jax.models.decoder`). An adapter targets a set of projections
(those declared with a LoRA group in :mod:`sri_jax.models.params`:
``wq, wk, wv, wo, w_gate, w_up, w_down``) on a subset of the layers (for example only the
top K: the bottom layers then run forward-only during training) and holds, per target::

    a  [K, in, r]    (random init)
    b  [K, r, out]   (zero init: a fresh adapter is the identity)

for the K selected layers. The merged weight of selected layer ``layers[j]`` is::

    W' = W + (alpha / rank) * a[j] @ b[j]          ([in, out] layout)

(the PyTorch-layout statement of the same update is ``W + scale * B @ A`` with ``A = a.T``,
``B = b.T``). :func:`merge` folds the adapter into the base params once, at load time, so
sampling runs the plain decoder at full speed with no adapter code in the hot path.

On disk (:func:`save_adapter` / :func:`load_adapter`) an adapter is a directory written
atomically (temp sibling + rename)::

    adapter/      orbax StandardCheckpointer checkpoint of {target: {"a", "b"}}
    adapter.json  LoRA config, base model name and ``base_weight_hash``, adapter hash,
                  plus free-form metadata (training recipe, data splits, evaluation)

Loading against base weights whose hash differs from ``base_weight_hash`` is an error
(:class:`AdapterMismatchError`): an adapter only means something on the weights it was
trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._version import __version__
from ..artifacts import atomic_directory, read_json, recover, restore_tree, save_tree, write_json
from .config import ModelConfig
from .params import LORA_TARGETS

__all__ = ["LoraConfig", "TARGETS", "ATTENTION_TARGETS", "MLP_TARGETS", "AdapterMismatchError",
           "init_lora", "lora_delta", "merge", "apply_adapter_to_layers", "adapter_hash",
           "merged_weight_hash", "num_params", "save_adapter", "load_adapter",
           "merge_adapter_dir", "FORMAT_VERSION"]

FORMAT_VERSION = 1
ATTENTION_TARGETS = LORA_TARGETS["attention"]  # ("wq", "wk", "wv", "wo")
MLP_TARGETS = LORA_TARGETS["mlp"]              # ("w_gate", "w_up", "w_down")
TARGETS = ATTENTION_TARGETS + MLP_TARGETS


class AdapterMismatchError(ValueError):
    """An adapter applied to base weights (or a config) it was not trained for."""


@dataclass(frozen=True)
class LoraConfig:
    """rank r, alpha (scale = alpha / r), target projections, and the layers to adapt.

    ``layers``: explicit block indices (negative allowed), or None for all layers;
    ``top_layers``: shorthand for the top K blocks (ignored when ``layers`` is given).
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple = TARGETS
    layers: Optional[tuple] = None
    top_layers: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        problems = []
        if int(self.rank) < 1:
            problems.append(f"rank must be >= 1, got {self.rank}")
        if not self.targets:
            problems.append("targets is empty")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            problems.append(f"unknown targets {bad}; choose from {TARGETS}")
        if len(set(self.targets)) != len(self.targets):
            problems.append(f"duplicate targets {self.targets}")
        if self.top_layers is not None and int(self.top_layers) < 1:
            problems.append(f"top_layers must be >= 1, got {self.top_layers}")
        if problems:
            raise ValueError("invalid LoraConfig: " + "; ".join(problems))

    @property
    def scale(self) -> float:
        return float(self.alpha) / float(self.rank)

    def layer_indices(self, num_layers: int) -> tuple:
        """Sorted, de-duplicated, non-negative block indices this adapter touches."""
        if self.layers is not None:
            idx = []
            for i in self.layers:
                j = i + num_layers if i < 0 else i
                if not 0 <= j < num_layers:
                    raise ValueError(f"LoRA layer {i} out of range for a {num_layers}-layer "
                                     "model")
                idx.append(j)
            if not idx:
                raise ValueError("LoraConfig.layers is empty")
            return tuple(sorted(set(idx)))
        if self.top_layers is not None:
            k = min(int(self.top_layers), num_layers)
            return tuple(range(num_layers - k, num_layers))
        return tuple(range(num_layers))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoraConfig":
        d = dict(d)
        d["targets"] = tuple(d.get("targets", TARGETS))
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


def _target_shape(params: dict, name: str) -> tuple:
    layers = params["layers"]
    if name not in layers:
        raise AdapterMismatchError(f"the params have no layer weight {name!r} to adapt")
    w = layers[name]
    if w.ndim != 3:
        raise AdapterMismatchError(f"{name} has shape {w.shape}; expected stacked [N, in, out]")
    return tuple(w.shape)


def init_lora(params: dict, mcfg: ModelConfig, lcfg: LoraConfig, key) -> dict:
    """A fresh adapter (fp32): ``a`` ~ N(0, 1/in) (Kaiming-like), ``b`` = 0, so the merged
    model starts equal to the base model."""
    idx = lcfg.layer_indices(mcfg.num_layers)
    out = {}
    for i, name in enumerate(lcfg.targets):
        _, d_in, d_out = _target_shape(params, name)
        k = jax.random.fold_in(key, i)
        a = jax.random.normal(k, (len(idx), d_in, lcfg.rank), jnp.float32) / math.sqrt(d_in)
        out[name] = {"a": a, "b": jnp.zeros((len(idx), lcfg.rank, d_out), jnp.float32)}
    return out


def lora_delta(adapter: dict, lcfg: LoraConfig, name: str):
    """scale * a @ b for target ``name``: [K, in, out] fp32."""
    ab = adapter[name]
    return lcfg.scale * jnp.einsum("kir,kro->kio", ab["a"].astype(jnp.float32),
                                   ab["b"].astype(jnp.float32))


def _check(adapter: dict, params: dict, mcfg: ModelConfig, lcfg: LoraConfig):
    idx = lcfg.layer_indices(mcfg.num_layers)
    if set(adapter) != set(lcfg.targets):
        raise AdapterMismatchError(f"adapter targets {sorted(adapter)} != config targets "
                                   f"{sorted(lcfg.targets)}")
    for name in lcfg.targets:
        n, d_in, d_out = _target_shape(params, name)
        a, b = adapter[name]["a"], adapter[name]["b"]
        want_a, want_b = (len(idx), d_in, lcfg.rank), (len(idx), lcfg.rank, d_out)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise AdapterMismatchError(
                f"adapter {name}: a {tuple(a.shape)}, b {tuple(b.shape)} do not fit the model "
                f"(expected a {want_a}, b {want_b} for layers {idx})")
    return idx


def merge(params: dict, adapter: dict, mcfg: ModelConfig, lcfg: LoraConfig) -> dict:
    """Base params with the adapter folded in (a new pytree; ``params`` is not modified).

    Each targeted weight of each selected layer becomes ``W + scale * a @ b`` (computed in
    fp32, cast to W's dtype); every other leaf is passed through unchanged."""
    idx = _check(adapter, params, mcfg, lcfg)
    sel = jnp.asarray(np.asarray(idx, np.int32))
    layers = dict(params["layers"])
    for name in lcfg.targets:
        w = layers[name]
        upd = w[sel].astype(jnp.float32) + lora_delta(adapter, lcfg, name)
        layers[name] = w.at[sel].set(upd.astype(w.dtype))
    out = dict(params)
    out["layers"] = layers
    return out


def apply_adapter_to_layers(layer_params: dict, adapter: dict, lcfg: LoraConfig) -> dict:
    """Merge into a stacked slice that holds exactly the adapter's K layers (in order):
    used by the trainer, which runs only the adapted top layers with gradients."""
    out = dict(layer_params)
    for name in lcfg.targets:
        w = out[name]
        out[name] = (w.astype(jnp.float32) + lora_delta(adapter, lcfg, name)).astype(w.dtype)
    return out


def num_params(adapter: dict) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(adapter)))


def adapter_hash(adapter: dict) -> str:
    """sha256 over target names, shapes and fp32 bytes (deterministic, order-independent)."""
    h = hashlib.sha256()
    for name in sorted(adapter):
        for part in ("a", "b"):
            x = np.ascontiguousarray(np.asarray(adapter[name][part], np.float32))
            h.update(f"{name}.{part}:{x.shape}".encode())
            h.update(x.tobytes())
    return h.hexdigest()


def merged_weight_hash(base_hash: str, adapter_digest: str) -> str:
    """Hash identifying base weights + adapter (differs from the base hash)."""
    return hashlib.sha256(f"{base_hash}+lora:{adapter_digest}".encode()).hexdigest()


# ----------------------------------------------------------------------------- persistence


def save_adapter(path, adapter: dict, lcfg: LoraConfig, *, base_weight_hash: str,
                 base_model: str = "", metadata: Optional[dict] = None,
                 overwrite: bool = False) -> Path:
    """Write an adapter directory atomically (orbax params + adapter.json): a new or empty
    folder, or over another adapter with ``overwrite=True`` (:mod:`sri_jax.artifacts`)."""
    path = Path(path)
    host = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), adapter)
    meta = {"format": FORMAT_VERSION, "kind": "lora", "lora": lcfg.to_dict(),
            "base_model": base_model, "base_weight_hash": base_weight_hash,
            "adapter_hash": adapter_hash(host), "num_params": num_params(host),
            "shapes": {n: {p: list(host[n][p].shape) for p in ("a", "b")} for n in host},
            "version": __version__, "metadata": metadata or {}}
    with atomic_directory(path, "adapter", fmt=FORMAT_VERSION, overwrite=overwrite) as tmp:
        save_tree(tmp / "adapter", host)
        write_json(tmp / "adapter.json", meta)
    return path


def read_adapter_meta(path) -> dict:
    path = Path(path)
    recover(path)
    meta_file = path / "adapter.json"
    if not meta_file.is_file() or not (path / "adapter").is_dir():
        raise FileNotFoundError(f"no LoRA adapter at {path} (expected {meta_file} and "
                                f"{path / 'adapter'}); train one with `sri-jax finetune`")
    meta = read_json(meta_file, "adapter metadata", "the adapter is damaged; train it again "
                     "(`sri-jax finetune`)")
    if meta.get("kind") != "lora" or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a LoRA adapter of format {FORMAT_VERSION} "
                         f"(kind={meta.get('kind')!r}, format={meta.get('format')!r})")
    return meta


def load_adapter(path, *, base_weight_hash: Optional[str] = None):
    """Restore ``(adapter, lora_config, meta)``; with ``base_weight_hash`` also check that
    the adapter was trained on those base weights (:class:`AdapterMismatchError` if not)."""
    path = Path(path)
    meta = read_adapter_meta(path)
    if base_weight_hash is not None and meta.get("base_weight_hash") != base_weight_hash:
        raise AdapterMismatchError(
            f"the LoRA adapter at {path} was trained on base weights with hash "
            f"{meta.get('base_weight_hash')!r} ({meta.get('base_model') or 'unknown model'}), "
            f"but the base weights given have hash {base_weight_hash!r}; load it on the base "
            "model it was trained for, or retrain it (`sri-jax finetune`)")
    lcfg = LoraConfig.from_dict(meta["lora"])
    target = {n: {p: np.zeros(s, np.float32) for p, s in parts.items()}
              for n, parts in meta["shapes"].items()}
    adapter = restore_tree(path / "adapter", target)
    adapter = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), adapter)
    got = adapter_hash(adapter)
    if meta.get("adapter_hash") and got != meta["adapter_hash"]:
        raise ValueError(f"{path}: adapter contents hash {got} != recorded "
                         f"{meta['adapter_hash']} (corrupted checkpoint?)")
    return adapter, lcfg, meta


def merge_adapter_dir(model, path):
    """Load the adapter at ``path`` for ``model`` (a :class:`Model`; its ``weight_hash`` must
    match), merge it, and return a new Model whose ``weight_hash`` names base + adapter."""
    adapter, lcfg, meta = load_adapter(path, base_weight_hash=model.weight_hash)
    params = merge(model.params, adapter, model.config, lcfg)
    return dataclasses.replace(model, params=params,
                               weight_hash=merged_weight_hash(model.weight_hash,
                                                              meta["adapter_hash"]))
