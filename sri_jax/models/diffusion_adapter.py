"""The diffusion adapter of an AR model (the artifact of :mod:`sri_jax.diffusion_adapt`): the
config made bidirectional with Dream's shift and a mask id, the LoRA factors and the mask
embedding row applied to the base params, and the shipped folder read back and checked
against its base weights (``artifact.json``, ``diffusion.json``, ``adapter.npz`` in bf16)."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from . import decoder as D
from .lora import AdapterMismatchError, LoraConfig, merge, merged_weight_hash

__all__ = ["ARTIFACT_KIND", "FORMAT_VERSION", "diffusion_config", "adapted_params",
           "read_artifact", "apply_artifact"]

ARTIFACT_KIND = "diffusion-adapter"
FORMAT_VERSION = 1


def diffusion_config(cfg, mask_token_id: int):
    """The AR config turned bidirectional, with Dream's shift and the mask id."""
    if not 0 <= mask_token_id < cfg.vocab_size:
        raise ValueError(f"mask token id {mask_token_id} is outside the vocabulary "
                         f"(0..{cfg.vocab_size - 1})")
    return cfg.replace(causal=False, logits_shift=True, mask_token_id=int(mask_token_id))


def adapted_params(params, adapter, mcfg, lcfg: LoraConfig, factored: bool = True):
    """Base params with the adapter on every adapted layer and the mask row set. ``factored``
    keeps each update as a :class:`~sri_jax.models.decoder.LoraWeight` (training: no
    full-size weight gradients); otherwise the update is folded in (:func:`merge`)."""
    out = dict(params)
    out["embed"] = params["embed"].at[mcfg.mask_token_id].set(
        adapter["mask_embed"].astype(params["embed"].dtype))
    if not factored:
        return merge(out, adapter["lora"], mcfg, lcfg)
    idx = np.asarray(lcfg.layer_indices(mcfg.num_layers), np.int32)
    layers = dict(params["layers"])
    for k in lcfg.targets:
        w = layers[k]
        a = jnp.zeros(w.shape[:2] + (lcfg.rank,), w.dtype).at[idx].set(
            (lcfg.scale * adapter["lora"][k]["a"]).astype(w.dtype))
        b = jnp.zeros((w.shape[0], lcfg.rank, w.shape[2]), w.dtype).at[idx].set(
            adapter["lora"][k]["b"].astype(w.dtype))
        layers[k] = D.LoraWeight(w, a, b)
    out["layers"] = layers
    return out


def _bf16_bits(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x, jnp.bfloat16)).view(np.uint16)


def _from_bits(bits) -> np.ndarray:
    return np.asarray(jnp.asarray(np.asarray(bits, np.uint16).view(jnp.bfloat16),
                                  jnp.float32))


def _flat(adapter: dict) -> dict:
    out = {"mask_embed": adapter["mask_embed"]}
    for k, ab in adapter["lora"].items():
        out[f"lora.{k}.a"], out[f"lora.{k}.b"] = ab["a"], ab["b"]
    return out


def _content_hash(flat_bits: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(flat_bits):
        h.update(f"{k}:{flat_bits[k].shape}".encode())
        h.update(np.ascontiguousarray(flat_bits[k]).tobytes())
    return h.hexdigest()


def read_artifact(path):
    """(adapter fp32, meta) of a shipped folder; a damaged or foreign folder is an error."""
    from ..artifacts import read_json

    path = Path(path)
    if not (path / "diffusion.json").is_file() or not (path / "adapter.npz").is_file():
        raise FileNotFoundError(f"no diffusion adapter at {path} (expected diffusion.json and "
                                "adapter.npz); build one with `sri-jax adapt-diffusion`")
    meta = read_json(path / "diffusion.json", "diffusion adapter metadata",
                     "rebuild it with `sri-jax adapt-diffusion`")
    if meta.get("kind") != ARTIFACT_KIND or meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a diffusion adapter of format {FORMAT_VERSION}")
    try:
        with np.load(path / "adapter.npz", allow_pickle=False) as z:
            bits = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path}/adapter.npz: cannot read the diffusion adapter ({e}); "
                         "rebuild it with `sri-jax adapt-diffusion`") from None
    if _content_hash(bits) != meta.get("adapter_hash"):
        raise ValueError(f"{path}/adapter.npz does not match its recorded hash (damaged); "
                         "rebuild it with `sri-jax adapt-diffusion`")
    lora = {}
    for k, v in bits.items():
        if k.startswith("lora."):
            _, target, part = k.split(".")
            lora.setdefault(target, {})[part] = _from_bits(v)
    return {"lora": lora, "mask_embed": _from_bits(bits["mask_embed"])}, meta


def apply_artifact(model, path):
    """The diffusion model: ``model`` (the AR base the artifact was trained on, checked by
    weight hash) with the LoRA merged, the mask row set and the config made bidirectional
    with Dream's shift."""
    adapter, meta = read_artifact(path)
    if model.weight_hash != meta["base_weight_hash"]:
        raise AdapterMismatchError(
            f"the diffusion adapter at {path} was trained on {meta.get('base_model')!r} "
            f"(weight hash {meta['base_weight_hash'][:16]}...), not on {model.name!r} (weight "
            f"hash {model.weight_hash[:16]}...); load it on its base model")
    ch = meta["config_changes"]
    mcfg = diffusion_config(model.config, ch["mask_token_id"])
    lcfg = LoraConfig.from_dict(meta["lora"])
    params = adapted_params(model.params, adapter, mcfg, lcfg, factored=False)
    return dataclasses.replace(model, config=mcfg, params=params,
                               weight_hash=merged_weight_hash(model.weight_hash,
                                                              "diffusion:" + meta["adapter_hash"]))
