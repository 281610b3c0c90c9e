"""Checkpoint readers: safetensors (own memory-mapped reader), HF directories, name maps."""

from .hf import (HFCheckpoint, checkpoint_tensors, config_from_hf, load_hf_dir, load_hf_model,
                 read_chat_template, resolve_dtype, weight_hash)
from .name_maps import (HF_DECODER_MAP, LLADA_MAP, NAME_MAPS, CheckpointMismatchError, NameMap,
                        Rule, name_map_for, plan_load)
from .safetensors_io import (SafetensorsError, SafetensorsFile, read_safetensors,
                             save_safetensors)

__all__ = [
    "HFCheckpoint", "checkpoint_tensors", "config_from_hf", "load_hf_dir", "load_hf_model",
    "read_chat_template", "resolve_dtype", "weight_hash",
    "HF_DECODER_MAP", "LLADA_MAP", "NAME_MAPS", "CheckpointMismatchError", "NameMap", "Rule",
    "name_map_for", "plan_load",
    "SafetensorsError", "SafetensorsFile", "read_safetensors", "save_safetensors",
]

# GGUF reader, model registry and the load_model dispatcher.
from .gguf_io import GGUFError, load_gguf  # noqa: E402
from .loader import load_model  # noqa: E402
from .registry import ModelNotFoundError, list_models, resolve  # noqa: E402

__all__ += ["GGUFError", "ModelNotFoundError", "list_models", "load_gguf", "load_model",
            "resolve"]
