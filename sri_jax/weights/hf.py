"""Load Hugging Face style checkpoint directories (Llama, SmolLM2, Qwen2, LLaDA, Dream).

A directory holds ``config.json`` plus ``model.safetensors`` or a sharded
``model.safetensors.index.json`` + shards, and optionally tokenizer files. Only safetensors are
read (with the own memory-mapped reader of :mod:`.safetensors_io`); pickled ``*.bin`` / ``*.pt``
weights are refused, because unpickling can run arbitrary code. No remote code is ever run.

Memory: every parameter of the stacked pytree is handed to ``place`` as a
:class:`ParamReader`, which reads any slice of it (``reader(index)``: the requested block of
``[num_layers, ...]``, assembled layer by layer from the memory-mapped tensors, cast to the
target dtype) and nothing else. The default ``place`` reads the whole parameter and calls
:func:`jax.device_put`, so peak host memory is one parameter; a sharded ``place``
(:func:`sri_jax.parallel.placer`) reads only the slices of the devices the process owns, so
no process ever holds a full host copy of a sharded parameter, and on a pod each host reads
only its own shards from disk.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import numpy as np

from ..models.config import ModelConfig, RopeScaling
from .dtypes import resolve_dtype
from .name_maps import LoadPlan, TensorSource, name_map_for, plan_load
from .safetensors_io import SafetensorsError, SafetensorsFile

__all__ = [
    "config_from_hf", "load_hf_dir", "load_hf_model", "HFCheckpoint", "weight_hash",
    "checkpoint_tensors", "read_chat_template", "resolve_dtype", "SUPPORTED_MODEL_TYPES",
    "LLADA_DEFAULT_IDS",
]

# model_type -> family, and architectures[0] -> family.
SUPPORTED_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "llada": "llada", "dream": "dream",
                         "gemma2": "gemma2", "gemma3_text": "gemma3"}
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                           "LLaDAModelLM": "llada", "DreamModel": "dream",
                           "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3"}
_SUPPORTED_TEXT = ("llama (LlamaForCausalLM: Llama-3/3.1, SmolLM2), qwen2 (Qwen2ForCausalLM: "
                   "Qwen2/Qwen2.5), llada (LLaDAModelLM: LLaDA-8B, LLaDA-1.5), "
                   "Dream (DreamModel: Dream-v0-7B), gemma2 (Gemma2ForCausalLM: Gemma-2 "
                   "2B/9B/27B), gemma3_text (Gemma3ForCausalLM: Gemma-3 270M/1B text-only)")

# REFERENCE.md section 3: the LLaDA-8B special ids, used when the files do not give them.
LLADA_DEFAULT_IDS = {"mask": 126336, "bos": 126080, "eos": 126081, "pad": 126081,
                     "eot": 126348}
DREAM_DEFAULT_MASK_ID = 151666

_EOT_STRINGS = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.tiktoken")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_NAME = "model.safetensors.index.json"

PlaceFn = Callable[[tuple, "ParamReader"], Any]


# ============================================================================ config


def _family_of(hf: dict) -> str:
    mt = hf.get("model_type")
    archs = hf.get("architectures") or []
    if isinstance(mt, str) and mt.lower() in SUPPORTED_MODEL_TYPES:
        return SUPPORTED_MODEL_TYPES[mt.lower()]
    for a in archs:
        if a in SUPPORTED_ARCHITECTURES:
            return SUPPORTED_ARCHITECTURES[a]
    raise ValueError(f"unsupported model: model_type {mt!r}, architectures {archs}. "
                     f"Supported: {_SUPPORTED_TEXT}. Check that config.json belongs to one of "
                     "these families.")


def _size(hf: dict, key: str, default=None) -> int:
    """A positive integer size from config.json (an integral float such as 4096.0 is
    accepted); a missing, zero, negative or non-integer value is a ValueError naming it."""
    v = hf.get(key, default)
    if v is None:
        raise ValueError(f"config.json has no {key!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
            v in (float("inf"), float("-inf")) or int(v) != v or v < 1:
        raise ValueError(f"config.json {key}={v!r} must be a positive integer")
    return int(v)


def _one_id(v) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return int(v[0]) if v else None
    return int(v)


def _id_list(v) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    return [int(v)]


def _added_token_id(tokenizer_config: Optional[dict], contents) -> Optional[int]:
    """Id of the first of ``contents`` among tokenizer_config.json's added tokens."""
    if not tokenizer_config:
        return None
    table = tokenizer_config.get("added_tokens_decoder") or {}
    by_content = {}
    for k, v in table.items():
        c = v.get("content") if isinstance(v, dict) else v
        if isinstance(c, str):
            by_content.setdefault(c, int(k))
    for c in contents:
        if c in by_content:
            return by_content[c]
    return None


def _rope_from_hf(hf: dict, default_theta: float) -> tuple[float, Optional[RopeScaling]]:
    """rope_theta and scaling from transformers 5 ``rope_parameters`` or 4.x ``rope_scaling``."""
    merged: dict = {}
    for key in ("rope_scaling", "rope_parameters"):  # the v5 key wins
        src = hf.get(key)
        if not src:
            continue
        if not isinstance(src, dict):
            raise ValueError(f"config.json {key} must be an object, got {src!r}")
        if src and all(isinstance(v, dict) for v in src.values()):
            raise NotImplementedError(
                f"config.json {key} holds per-layer-type RoPE settings {sorted(src)}; "
                "only one global RoPE setting is supported")
        merged.update(src)
    theta = float(merged.get("rope_theta", hf.get("rope_theta", default_theta)))
    rtype = merged.get("rope_type", merged.get("type")) or "default"
    if rtype == "default":
        return theta, None
    if rtype == "linear":
        try:
            return theta, RopeScaling(rope_type="linear", factor=float(merged["factor"]))
        except KeyError:
            raise ValueError(f"config.json linear RoPE scaling lacks 'factor': {merged}") \
                from None
    if rtype != "llama3":
        raise NotImplementedError(f"RoPE scaling type {rtype!r} is not supported (supported: "
                                  "'default', 'linear' and 'llama3'); config.json rope "
                                  f"settings: {merged}")
    try:
        scaling = RopeScaling(
            rope_type="llama3", factor=float(merged["factor"]),
            low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
            high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(merged["original_max_position_embeddings"]))
    except KeyError as e:
        raise ValueError(f"config.json llama3 RoPE scaling lacks {e.args[0]!r}: {merged}") \
            from None
    return theta, scaling


def _check_unsupported(hf: dict, checks: list[tuple[str, Any, Any]], family: str):
    bad = []
    for key, default, ok in checks:
        v = hf.get(key, default)
        good = ok(v) if callable(ok) else v == ok
        if not good:
            bad.append(f"{key}={v!r}")
    if bad:
        raise NotImplementedError(f"this {family} config uses features the decoder does not "
                                  f"implement: {', '.join(bad)}")


# What each family's decoder implements: (config.json key, its default, the supported value
# or a predicate); anything else is refused (LLaDA's own keys: _llada_config).
_FEATURE_CHECKS: dict[str, list] = {
    "llama": [("hidden_act", "silu", "silu"), ("attention_bias", False, False),
              ("mlp_bias", False, False)],
    "qwen2": [("hidden_act", "silu", "silu"), ("use_sliding_window", False, False)],
    "gemma2": [("attention_bias", False, False),
               ("use_bidirectional_attention", None, lambda v: not v)],
}
_FEATURE_CHECKS["dream"] = _FEATURE_CHECKS["qwen2"]
_FEATURE_CHECKS["gemma3"] = _FEATURE_CHECKS["gemma2"]


def _check_features(hf: dict, family: str) -> None:
    if family in ("gemma2", "gemma3"):  # the activation has two names in Gemma configs
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        _check_unsupported({"hidden_activation": act}, [
            ("hidden_activation", None, "gelu_pytorch_tanh")], family)
    _check_unsupported(hf, _FEATURE_CHECKS[family], family)


def _special_ids(hf: dict, gen: dict, tokenizer_config: Optional[dict]) -> dict:
    """BOS / EOS / pad from config.json, else generation_config.json; the end-of-turn id from
    the added tokens, else the last of several EOS ids."""
    bos = _one_id(hf.get("bos_token_id"))
    if bos is None:
        bos = _one_id(gen.get("bos_token_id"))
    eos_all = _id_list(hf.get("eos_token_id")) or _id_list(gen.get("eos_token_id"))
    pad = _one_id(hf.get("pad_token_id"))
    if pad is None:
        pad = _one_id(gen.get("pad_token_id"))
    eot = _added_token_id(tokenizer_config, _EOT_STRINGS)
    if eot is None and len(eos_all) > 1:
        eot = eos_all[-1]
    return dict(bos_token_id=bos, eos_token_id=eos_all[0] if eos_all else None,
                pad_token_id=pad, eot_token_id=eot)


def _dream_fields(hf: dict, kw: dict) -> dict:
    mask = hf.get("mask_token_id")
    mask = DREAM_DEFAULT_MASK_ID if mask is None else int(mask)
    _check_id_in_vocab("mask_token_id", mask, kw["vocab_size"])
    return dict(attention_bias=True, causal=False, mask_token_id=mask, logits_shift=True)


# family -> (config.json, the fields read so far) -> its own fields
_FAMILY_FIELDS: dict[str, Callable[[dict, dict], dict]] = {
    "llama": lambda hf, kw: {},
    "qwen2": lambda hf, kw: dict(attention_bias=True),
    "dream": _dream_fields,
    "gemma2": lambda hf, kw: _gemma_fields(hf, "gemma2", kw["num_layers"]),
    "gemma3": lambda hf, kw: _gemma_fields(hf, "gemma3", kw["num_layers"]),
}


def config_from_hf(hf_config: dict, *, generation_config: Optional[dict] = None,
                   tokenizer_config: Optional[dict] = None) -> ModelConfig:
    """Build a :class:`ModelConfig` from a checkpoint's ``config.json`` dict.

    ``generation_config`` / ``tokenizer_config`` (the dicts of those files, optional) supply
    special ids the config lacks (BOS from generation_config.json; the end-of-turn id from the
    added tokens ``<|eot_id|>`` / ``<|im_end|>``). Supported: model_type "llama" (incl. SmolLM2,
    Llama-3.1 "llama3" RoPE scaling), "qwen2", "llada" (LLaDA's own keys) and "Dream".
    """
    if not isinstance(hf_config, dict):
        raise TypeError(f"hf_config must be the dict of config.json, got {type(hf_config)}")
    hf = hf_config
    gen = generation_config or {}
    family = _family_of(hf)
    if family == "llada":
        return _llada_config(hf, gen, tokenizer_config)
    _check_features(hf, family)
    hidden = _size(hf, "hidden_size")
    heads = _size(hf, "num_attention_heads")
    kv = _size(hf, "num_key_value_heads", heads)
    head_dim = _size(hf, "head_dim", hidden // heads)
    # Gemma-3's RoPE (global and local) is set by _gemma_fields
    theta, scaling = (0.0, None) if family == "gemma3" else _rope_from_hf(hf, 10000.0)
    ids = _special_ids(hf, gen, tokenizer_config)
    kwargs = dict(
        family=family, vocab_size=_size(hf, "vocab_size"), hidden_size=hidden,
        intermediate_size=_size(hf, "intermediate_size"),
        num_layers=_size(hf, "num_hidden_layers"), num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta, rope_scaling=scaling,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=_size(hf, "max_position_embeddings", 4096), **ids)
    kwargs.update(_FAMILY_FIELDS[family](hf, kwargs))
    return ModelConfig(**kwargs)


def _optional_float(hf: dict, key: str, default):
    v = hf.get(key, default)
    return None if v is None else float(v)


def _gemma_fields(hf: dict, family: str, n_layers: int) -> dict:
    """The Gemma-2 / Gemma-3 text fields of a config.json (4.x and transformers 5 keys).

    Layer pattern: ``layer_types`` when given; otherwise Gemma-2 alternates sliding / full
    starting with sliding, Gemma-3 makes every ``sliding_window_pattern``-th layer (6) full.
    Gemma-3 RoPE: the global layers use ``rope_theta`` (1e6) with ``rope_scaling`` (linear on
    the 4B+ models), the sliding layers ``rope_local_base_freq`` (1e4) unscaled; transformers
    5 writes both as ``rope_parameters: {"full_attention": ..., "sliding_attention": ...}``."""
    gemma2 = family == "gemma2"
    types = hf.get("layer_types")
    if types is None:
        if gemma2:
            types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(n_layers)]
        else:
            pattern = _size(hf, "sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                     for i in range(n_layers)]
    elif not isinstance(types, list):
        raise ValueError(f"config.json layer_types must be a list, got {types!r}")
    out = dict(norm_unit_offset=True, sandwich_norms=True, qk_norm=not gemma2,
               scale_embeddings=True, mlp_activation="gelu_tanh",
               query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
               attn_logit_softcap=_optional_float(hf, "attn_logit_softcapping",
                                                  50.0 if gemma2 else None),
               final_logit_softcap=_optional_float(hf, "final_logit_softcapping",
                                                   30.0 if gemma2 else None),
               sliding_window=_size(hf, "sliding_window", 4096), layer_types=tuple(types),
               tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)))
    if not gemma2:
        rp = hf.get("rope_parameters")
        if isinstance(rp, dict) and rp and all(isinstance(v, dict) for v in rp.values()):
            theta, scaling = _rope_from_hf({"rope_parameters": rp.get("full_attention") or {}},
                                           float(hf.get("rope_theta", 1e6)))
            local, local_scaling = _rope_from_hf(
                {"rope_parameters": rp.get("sliding_attention") or {}},
                float(hf.get("rope_local_base_freq", 1e4)))
            if local_scaling is not None:
                raise NotImplementedError("config.json scales the sliding layers' RoPE; only "
                                          "the global layers' scaling is supported")
        else:
            theta, scaling = _rope_from_hf(hf, 1e6)
            local = float(hf.get("rope_local_base_freq", 1e4))
        out.update(rope_theta=theta, rope_scaling=scaling, rope_local_theta=local)
    return out


def _check_id_in_vocab(name, value, vocab):
    if value is not None and not 0 <= value < vocab:
        raise ValueError(f"config.json {name}={value} is outside the vocabulary "
                         f"(size {vocab}); fix {name} or vocab_size/embedding_size")


def _llada_config(hf: dict, gen: dict, tok: Optional[dict]) -> ModelConfig:
    _check_unsupported(hf, [
        ("block_type", "llama", "llama"),
        ("activation_type", "silu", "silu"),
        ("layer_norm_type", "rms", "rms"),
        ("alibi", False, False),
        ("rope", True, True),
        ("attention_layer_norm", False, False),
        ("input_emb_norm", False, False),
        ("scale_logits", False, False),
        ("include_bias", False, False),
        ("bias_for_layer_norm", None, lambda v: not v),
        ("layer_norm_with_affine", True, True),
        ("clip_qkv", None, None),
    ], "llada")
    d = _size(hf, "d_model")
    heads = _size(hf, "n_heads")
    kv = _size(hf, "n_kv_heads", 1 if hf.get("multi_query_attention") else heads)
    mlp = _size(hf, "mlp_hidden_size", _size(hf, "mlp_ratio", 4) * d)
    vocab = _size(hf, "embedding_size") if hf.get("embedding_size") else _size(hf, "vocab_size")
    if vocab < _size(hf, "vocab_size"):
        raise ValueError(f"config.json embedding_size {vocab} is smaller than vocab_size "
                         f"{hf['vocab_size']}")
    theta, scaling = _rope_from_hf(hf, 10000.0)

    def pick(name, *values):
        for v in values:
            v = _one_id(v)
            if v is not None:
                return v
        default = LLADA_DEFAULT_IDS[name]
        return default if default < vocab else None

    mask = hf.get("mask_token_id")
    mask = LLADA_DEFAULT_IDS["mask"] if mask is None else int(mask)
    _check_id_in_vocab("mask_token_id", mask, vocab)
    return ModelConfig(
        family="llada", vocab_size=vocab, hidden_size=d, intermediate_size=mlp,
        num_layers=_size(hf, "n_layers"), num_heads=heads, num_kv_heads=kv,
        head_dim=d // heads, rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        rope_theta=theta, rope_scaling=scaling,
        rope_fp32_apply=bool(hf.get("rope_full_precision", True)),
        attention_bias=bool(hf.get("include_qkv_bias", False)),
        tie_word_embeddings=bool(hf.get("weight_tying", False)), causal=False,
        max_position_embeddings=_size(hf, "max_sequence_length", 4096),
        mask_token_id=mask,
        bos_token_id=pick("bos", gen.get("bos_token_id"), hf.get("bos_token_id"),
                          _added_token_id(tok, ("<|startoftext|>",))),
        eos_token_id=pick("eos", hf.get("eos_token_id"), gen.get("eos_token_id")),
        pad_token_id=pick("pad", hf.get("pad_token_id"), gen.get("pad_token_id")),
        eot_token_id=pick("eot", _added_token_id(tok, ("<|eot_id|>",))))


# ============================================================================ files


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except RecursionError:
        raise ValueError(f"{path}: {what} nests too deeply to be a real {what}; the file is "
                         "corrupt, download it again") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e}); the file is corrupt or "
                         "incompletely downloaded, download it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must be a JSON object")
    return data


def _optional_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return _read_json(path, path.name)
    except ValueError as e:
        warnings.warn(f"ignoring {e}")
        return None


def _weight_files(d: Path) -> tuple[Optional[Path], list[str]]:
    """(index file or None, weight file names relative to ``d``), refusing pickle-only dirs."""
    index = d / INDEX_NAME
    if not index.is_file():
        others = sorted(d.glob("*.safetensors.index.json"))
        index = others[0] if others else None
    if index is not None:
        data = _read_json(index, "the safetensors index")
        wm = data.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise ValueError(f"{index}: has no weight_map; the index is corrupt, download it "
                             "again")
        shards = sorted(set(wm.values()))
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{d}: {len(missing)} of the {len(shards)} shards listed in {index.name} are "
                f"missing: {', '.join(missing)}. Download them (e.g. `huggingface-cli "
                f"download <repo> {' '.join(missing)} --local-dir {d}`) and load again.")
        return index, shards
    files = sorted(p.name for p in d.glob("*.safetensors"))
    if files:
        return None, files
    pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{d} holds only PyTorch pickle weights ({', '.join(pickles[:5])}); sri_jax reads "
            "safetensors only and never unpickles (loading a pickle can run arbitrary code). "
            "Download the repository's *.safetensors files, or convert once in a trusted "
            "environment: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, "
            "safe_serialization=True).")
    ggufs = sorted(p.name for p in d.glob("*.gguf"))
    if ggufs:
        raise ValueError(f"{d} holds GGUF files ({', '.join(ggufs)}), not safetensors: use "
                         "the GGUF loader for them.")
    raise FileNotFoundError(f"{d} has no weights: expected model.safetensors, or "
                            f"{INDEX_NAME} with its shards")


def checkpoint_tensors(path) -> tuple[dict[str, TensorSource], dict[str, SafetensorsFile]]:
    """Every stored tensor of a checkpoint directory and the opened (header-only) files.

    With an index, every shard it lists must exist (checked before any shard is read), and
    every tensor it lists must be in that shard. Corrupt / truncated shards are all reported
    in one error.
    """
    d = Path(path)
    index, names = _weight_files(d)
    opened: dict[str, SafetensorsFile] = {}
    corrupt = []
    for n in names:
        try:
            opened[n] = SafetensorsFile(d / n)
        except SafetensorsError as e:
            corrupt.append(str(e))
    if corrupt:
        raise SafetensorsError("\n".join(corrupt) if len(corrupt) == 1 else
                               f"{len(corrupt)} weight files are damaged:\n  "
                               + "\n  ".join(corrupt))
    tensors: dict[str, TensorSource] = {}
    problems = []
    if index is not None:
        wm = _read_json(index, "the safetensors index")["weight_map"]
        for name, fname in sorted(wm.items()):
            f = opened[fname]
            if name not in f:
                problems.append(f"{index.name} lists {name} in {fname}, which does not "
                                "contain it")
                continue
            inf = f.info(name)
            tensors[name] = TensorSource(name, fname, inf.dtype, inf.shape)
    for fname, f in opened.items():
        for name, inf in f.infos().items():
            if name in tensors:
                if index is None and tensors[name].file != fname:
                    problems.append(f"{name} is stored twice, in {tensors[name].file} and "
                                    f"{fname}")
                continue
            tensors[name] = TensorSource(name, fname, inf.dtype, inf.shape)
    if problems:
        raise ValueError(f"{d}: the weight files are inconsistent: " + "; ".join(problems)
                         + ". The index and shards come from different revisions or a download "
                         "is incomplete: download the checkpoint again.")
    return tensors, opened


_HASH_CHUNK = 1 << 20


def weight_hash(path) -> str:
    """A cheap, stable content hash of a checkpoint directory's weights (hex sha256).

    Hashed, in order: the tag ``sri_jax-weight-hash-v1``; ``config.json``'s bytes; the
    safetensors index's bytes when there is one; then for every weight file (sorted by name):
    its name, its size in bytes, its first 1 MiB and its last 1 MiB. The first MiB holds the
    safetensors header (every tensor name, dtype, shape and offset), so any change of layout is
    caught; changed values are caught when they touch the head or tail of a file. It reads at
    most 2 MiB per file, so hashing an 8B checkpoint takes milliseconds. Tokenizer files are not
    part of it.
    """
    d = Path(path)
    index, names = _weight_files(d)
    h = hashlib.sha256(b"sri_jax-weight-hash-v1\0")
    for p in [d / "config.json"] + ([index] if index is not None else []):
        if p.is_file():
            data = p.read_bytes()
            h.update(f"{p.name}\0{len(data)}\0".encode())
            h.update(data)
    for n in names:
        p = d / n
        size = p.stat().st_size
        h.update(f"{n}\0{size}\0".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(_HASH_CHUNK))
            if size > _HASH_CHUNK:
                fh.seek(max(size - _HASH_CHUNK, _HASH_CHUNK))
                h.update(fh.read())
    return h.hexdigest()


def read_chat_template(path) -> Optional[str]:
    """The chat template stored in a directory (chat_template.jinja, tokenizer_config.json's
    ``chat_template`` (a string, or a list of named templates: "default"), chat_template.json)."""
    d = Path(path)
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for fname in ("tokenizer_config.json", "chat_template.json"):
        data = _optional_json(d / fname)
        if not data:
            continue
        t = data.get("chat_template")
        if isinstance(t, str):
            return t
        if isinstance(t, list) and t:
            named = {e.get("name"): e.get("template") for e in t if isinstance(e, dict)}
            return named.get("default") or next(iter(named.values()), None)
    return None


def _load_tokenizer(d: Path):
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
    except Exception as e:  # a broken tokenizer must not block loading the weights
        warnings.warn(f"{d}: tokenizer files exist but the tokenizer could not be built "
                      f"without remote code ({type(e).__name__}: {e}); continuing without one")
        return None


# ============================================================================ load


_BLOCK = 1024


def _fill(dst: np.ndarray, src: np.ndarray):
    """dst[...] = src (with dtype cast); 2-D transposed views are copied in cache-friendly
    tiles, which is ~2x faster than numpy's strided copy for large matrices."""
    if src.ndim == 2 and not src.flags.c_contiguous and src.size > _BLOCK * _BLOCK:
        r, c = src.shape
        for i in range(0, r, _BLOCK):
            for j in range(0, c, _BLOCK):
                dst[i:i + _BLOCK, j:j + _BLOCK] = src[i:i + _BLOCK, j:j + _BLOCK]
    else:
        dst[...] = src


def _rows_equal(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> bool:
    if a.shape != b.shape:
        return False
    return all(np.array_equal(a[i:i + chunk], b[i:i + chunk]) for i in range(0, len(a), chunk))


class HFCheckpoint(NamedTuple):
    config: ModelConfig
    params: dict
    tokenizer: Any
    weight_hash: str
    chat_template: Optional[str]


class ParamReader:
    """Reads any block of one parameter straight from the memory-mapped checkpoint.

    ``reader(index)`` with ``index`` a tuple of slices (as :func:`jax.make_array_from_callback`
    passes; missing trailing dimensions mean "all") returns a new host array of ``dtype``
    holding exactly that block. Stacked-layer parameters ``[num_layers, ...]`` are assembled
    from the per-layer tensors of the requested layers only; within a tensor only the
    requested rows/columns are copied, so only their pages of the file are touched.
    ``bytes_read`` counts the bytes of the blocks handed out (for tests and logs)."""

    def __init__(self, plan: LoadPlan, path: tuple, files: dict, dtype):
        entries = plan.entries[path]
        self.path = tuple(path)
        self.shape = tuple(plan.shapes[path])
        self._plan = plan
        self.dtype = np.dtype(dtype)
        self.layered = len(entries) != 1 or entries[0].layer is not None
        self._entries = {e.layer: e for e in entries} if self.layered else {None: entries[0]}
        self._files = files
        self.bytes_read = 0

    def _view(self, layer):
        e = self._entries[layer]
        return self._plan.read(e, lambda src: self._files[src.file].get(src.name))

    def __call__(self, index=()) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(tuple(index)))
        out = np.empty(_sliced_shape(self.shape, index), self.dtype)
        if self.layered:
            layers = range(*index[0].indices(self.shape[0]))
            for j, layer in enumerate(layers):
                _fill(out[j], self._view(layer)[index[1:]])
        else:
            _fill(out, self._view(None)[index])
        self.bytes_read += out.nbytes
        return out


def _sliced_shape(shape: tuple, index: tuple) -> tuple:
    return tuple(len(range(*s.indices(n))) for s, n in zip(index, shape))


def _default_place(path: tuple, read: ParamReader):
    return jax.device_put(read())


def load_params(plan: LoadPlan, files: dict[str, SafetensorsFile], dtype,
                place: PlaceFn = _default_place) -> dict:
    """Assemble the params pytree from a validated plan, one parameter at a time: each is
    handed to ``place`` as a :class:`ParamReader`."""
    params: dict = {}
    for path, entries in plan.entries.items():
        node = params
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = place(path, ParamReader(plan, path, files, dtype))
    return params


def read_hf_config(d: Path) -> ModelConfig:
    """The :class:`ModelConfig` of checkpoint directory ``d`` (its config.json, with
    generation_config.json and tokenizer_config.json when present)."""
    if not d.is_dir():
        raise FileNotFoundError(f"checkpoint directory {d} does not exist (pass a local "
                                "directory holding config.json and *.safetensors)")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{d} has no config.json; a checkpoint directory needs the "
                                "config.json published with the weights")
    hf = _read_json(cfg_path, "config.json")
    try:
        return config_from_hf(hf, generation_config=_optional_json(d / "generation_config.json"),
                              tokenizer_config=_optional_json(d / "tokenizer_config.json"))
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise ValueError(msg if str(cfg_path) in msg else
                         f"{cfg_path}: {msg}; use the config.json published with these "
                         "weights") from None


def load_hf_dir(path, *, dtype: Union[str, Any] = "bfloat16", place: Optional[PlaceFn] = None,
                mesh=None, load_tokenizer: bool = True) -> HFCheckpoint:
    """Load a checkpoint directory: ``(config, params, tokenizer | None, weight_hash,
    chat_template | None)`` (a :class:`HFCheckpoint` named tuple).

    path       directory with config.json and safetensors weights (single file or sharded
               with ``model.safetensors.index.json``; every shard must be present).
    dtype      parameter dtype: "bfloat16" (default), "float32", "float16" or a dtype. All
               params, norms included, use it (the decoder computes norm statistics in fp32).
    place      ``place(path_tuple, reader) -> array`` puts one parameter on its device(s);
               ``reader`` (:class:`ParamReader`) has ``shape``, ``dtype`` and reads any block,
               ``reader(index)``. Default: ``jax.device_put(reader())``. A sharded loader
               (:func:`sri_jax.parallel.placer`) reads each device's slice only.
    mesh       a ``("data", "model")`` mesh (:func:`sri_jax.make_mesh`): ``place`` becomes
               :func:`sri_jax.parallel.placer` for this config, so each parameter goes
               straight into its tensor-parallel shards.
    load_tokenizer  build ``transformers.AutoTokenizer`` when tokenizer files exist (never
               with remote code); a tokenizer that fails to build gives None and a warning.

    Every mismatch between weights and config is reported at once
    (:class:`~sri_jax.weights.name_maps.CheckpointMismatchError`).
    """
    d = Path(path).expanduser()
    cfg = read_hf_config(d)
    np_dtype = resolve_dtype(dtype)
    if mesh is not None:
        from ..parallel.mesh import placer

        place = placer(cfg, mesh)

    tensors, files = checkpoint_tensors(d)
    plan = plan_load(cfg, name_map_for(cfg), tensors, where=f"checkpoint {d}")
    if plan.tied_head is not None:
        head = files[plan.tied_head.file].get(plan.tied_head.name)
        emb_src = plan.entries[("embed",)][0].source
        if not _rows_equal(head, files[emb_src.file].get(emb_src.name)):
            warnings.warn(
                f"{d}: config.json ties the output head to the embedding, but the stored "
                f"{plan.tied_head.name} (in {plan.tied_head.file}) differs from it; following "
                "the config (the stored head is ignored, as transformers does). Set "
                "tie_word_embeddings / weight_tying to false in config.json to use it.")
        del head
    params = load_params(plan, files, np_dtype, place or _default_place)
    for f in files.values():
        f.close()

    tokenizer = _load_tokenizer(d) if load_tokenizer else None
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template is None:
        template = read_chat_template(d)
    return HFCheckpoint(cfg, params, tokenizer, weight_hash(d), template)


def load_hf_model(path, *, dtype="bfloat16", place: Optional[PlaceFn] = None,
                  load_tokenizer: bool = True, name: Optional[str] = None):
    """:func:`load_hf_dir` wrapped in a :class:`sri_jax.models.model.Model`."""
    from ..models.model import Model
    ck = load_hf_dir(path, dtype=dtype, place=place, load_tokenizer=load_tokenizer)
    return Model(config=ck.config, params=ck.params, tokenizer=ck.tokenizer,
                 name=name or str(path), weight_hash=ck.weight_hash,
                 chat_template=ck.chat_template)
