"""Load llama.cpp GGUF checkpoints (llama, qwen2 and gemma3 architectures) into the decoder
pytree.

Reading. :class:`GGUFFile` parses the GGUF v2/v3 header (metadata key/values and the
tensor table) with ``struct`` and memory-maps the tensor data; ``gguf.GGUFReader`` builds
one numpy memmap view per metadata item and needs ~3.5 s for a 49k-token vocabulary, this
parser ~0.1 s. Every tensor is dequantized on the host with numpy by the ``gguf`` package
(``gguf.quants.dequantize``: F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, the K- and I-quants, ...).

Layout. GGUF lists dimensions innermost-first: a PyTorch ``[out, in]`` weight has
``ne = (in, out)``, so the row-major array of shape ``reversed(ne)`` is the PyTorch layout.
It is un-permuted where llama.cpp's converter permuted it, transposed to the ``[in, out]``
layout of :mod:`sri_jax.models.decoder`, and written into one preallocated array per
parameter (layers stacked on the leading axis).

Q/K permutation. llama.cpp's ``convert_hf_to_gguf.py`` reorders the rows of ``attn_q`` /
``attn_k`` (weights and biases) for llama-arch files: each head's rows ``(half, pair)`` of
the split-halves RoPE layout are stored as ``(pair, half)`` (interleaved RoPE). We restore
``(head, half, pair)`` with ``n_head`` for Q and ``n_head_kv`` for K. qwen2-arch files are
not permuted (llama.cpp runs qwen2 with NEOX-style RoPE).

Gemma-3. llama.cpp's converter stores every RMSNorm weight (``*norm.weight``) as 1 + w
(``Gemma3Model.norm_shift``); transformers' GGUF loader subtracts the 1 again
(``Gemma2TensorProcessor``), and so do we (in fp32), keeping the decoder's (1 + w) norm.
The file has no layer pattern, local RoPE base or query scale: llama.cpp hard-codes them
(every 6th layer global, local base 10,000, scores scaled by head_dim^-0.5 except the 62-layer
27B, hidden / heads), and transformers' Gemma3TextConfig defaults agree for every size but the
27B (query_pre_attn_scalar 256); we follow llama.cpp. Q/K are not permuted.

The tensor names and stored layouts are name maps (:mod:`sri_jax.weights.name_maps`: the
Q/K un-permutation and the 1 + w norms are transforms) and the per-architecture facts
(:data:`ARCHITECTURES`) are data; supporting another architecture the decoder can run means
adding entries, not code.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..models.config import ModelConfig, RopeScaling
from .dtypes import resolve_dtype
from .name_maps import (GGUF_GEMMA3_MAP, GGUF_LLAMA_MAP, GGUF_MAP, CheckpointMismatchError,
                        NameMap, TensorSource, permute_qk, plan_load, unpermute_qk)

__all__ = ["GGUFError", "GGUFFile", "GGUFTensorInfo", "load_gguf", "read_gguf_config",
           "gguf_weight_hash", "load_gguf_tokenizer", "unpermute_qk", "permute_qk",
           "ARCHITECTURES"]

_REDOWNLOAD = "the file is truncated or corrupt: delete it and download it again"


class GGUFError(ValueError):
    """A GGUF file that cannot be read or is not supported."""


@dataclass(frozen=True)
class ArchSpec:
    """What an llama.cpp ``general.architecture`` means for the decoder."""

    family: str            # ModelConfig.family
    name_map: NameMap      # tensor names and stored layouts (Q/K permutation, 1 + w norms)
    attention_bias: bool   # q/k/v biases are expected
    default_eps: float = 1e-5
    default_theta: float = 10000.0
    linear_rope_scaling: bool = False  # rope.scaling.type "linear" is understood
    # more config fields from the metadata: (file, arch, the fields read so far) -> fields
    extra_fields: Optional[Callable[["GGUFFile", str, dict], dict]] = None


def _gemma3_fields(g: "GGUFFile", arch: str, kw: dict) -> dict:
    """Gemma-3's fixed architecture, its sliding window, and every 6th layer global."""
    n = kw["num_layers"]
    return dict(
        norm_unit_offset=True, sandwich_norms=True, qk_norm=True, scale_embeddings=True,
        mlp_activation="gelu_tanh", rope_local_theta=10000.0,
        query_pre_attn_scalar=float(kw["hidden_size"] // kw["num_heads"] if n == 62
                                    else kw["head_dim"]),
        sliding_window=int(_need(g, arch, "attention.sliding_window")),
        layer_types=tuple("sliding_attention" if (i + 1) % 6 else "full_attention"
                          for i in range(n)))


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec(family="llama", name_map=GGUF_LLAMA_MAP, attention_bias=False),
    "qwen2": ArchSpec(family="qwen2", name_map=GGUF_MAP, attention_bias=True,
                      default_eps=1e-6, default_theta=1e6),
    "gemma3": ArchSpec(family="gemma3", name_map=GGUF_GEMMA3_MAP, attention_bias=False,
                       default_eps=1e-6, default_theta=1e6, linear_rope_scaling=True,
                       extra_fields=_gemma3_fields),  # linear: the global layers' (4B+)
}

_MiB = 1 << 20


# ----------------------------------------------------------------------------- file format

_GGUF_MAGIC = b"GGUF"
# GGUF value types: id -> struct code (None: string / array)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}
_NP_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
              10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_MAX_NESTING = 8  # arrays of arrays in metadata; real files use at most 1


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the tensor table. ``ne`` is GGUF's innermost-first dims; ``shape`` the
    row-major (PyTorch) shape; ``offset`` absolute in the file."""

    name: str
    ne: tuple
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple:
        return tuple(reversed(self.ne))

    @property
    def type_name(self) -> str:
        from gguf import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"


class GGUFFile:
    """A parsed GGUF file: ``metadata`` (dict of python values), ``tensors`` (list of
    :class:`GGUFTensorInfo`), and :meth:`array` to dequantize one tensor."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.size = self.path.stat().st_size
        try:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r") if self.size else \
                np.zeros(0, np.uint8)
            self._parse()
        except GGUFError:
            raise
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError,
                MemoryError, RecursionError) as e:
            raise GGUFError(f"{self.path}: not a readable GGUF file ({type(e).__name__}: "
                            f"{e}); {_REDOWNLOAD}.") from e

    # -- header

    def _parse(self):
        buf = memoryview(self._data)
        if bytes(buf[:4]) != _GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r}); if it "
                            f"should be one, {_REDOWNLOAD}.")
        (version,) = struct.unpack_from("<I", buf, 4)
        if version & 0xFFFF == 0:
            raise GGUFError(f"{self.path}: big-endian GGUF files are not supported")
        if version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {version} is not supported (2 or 3)")
        self.version = version
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
        pos = 24
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, int] = {}
        for _ in range(n_kv):
            key, pos = self._string(buf, pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            value, pos = self._value(buf, pos + 4, vtype)
            self.metadata[key] = value
            self.value_types[key] = vtype
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            if n_dims > 8:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dims; "
                                f"{_REDOWNLOAD}.")
            ne = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            pos += 4 + 8 * n_dims
            ggml_type, rel = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            except (ValueError, KeyError):
                raise GGUFError(f"{self.path}: tensor {name!r} has unknown ggml type "
                                f"{ggml_type}; the installed gguf package may be too old "
                                "(pip install -U gguf), or the file is corrupt") from None
            n = math.prod(ne)
            if ne and ne[0] % block:
                raise GGUFError(f"{self.path}: tensor {name!r} dims {ne} do not fit "
                                f"block size {block}; {_REDOWNLOAD}.")
            infos.append((name, tuple(int(d) for d in ne), ggml_type, rel,
                          n // block * type_size))
        align = int(self.metadata.get("general.alignment", 32))
        if align <= 0 or align & (align - 1):
            raise GGUFError(f"{self.path}: invalid general.alignment {align}")
        self.data_offset = (pos + align - 1) // align * align
        self.tensors = [GGUFTensorInfo(nm, ne, t, self.data_offset + rel, nb)
                        for nm, ne, t, rel, nb in infos]
        for t in self.tensors:
            if t.offset + t.nbytes > self.size:
                raise GGUFError(
                    f"{self.path}: tensor {t.name!r} ends at byte {t.offset + t.nbytes} but "
                    f"the file has only {self.size} bytes: {_REDOWNLOAD}.")
        self.tensor_map = {t.name: t for t in self.tensors}

    @staticmethod
    def _string(buf, pos):
        (n,) = struct.unpack_from("<Q", buf, pos)
        end = pos + 8 + n
        if end > len(buf):
            raise IndexError("string runs past the end of the file")
        return bytes(buf[pos + 8:end]).decode("utf-8", errors="surrogateescape"), end

    def _value(self, buf, pos, vtype, depth: int = 0):
        if depth > _MAX_NESTING:
            raise GGUFError(f"{self.path}: metadata arrays nest more than {_MAX_NESTING} deep; "
                            f"{_REDOWNLOAD}.")
        if vtype in _SCALAR:
            code = "<" + _SCALAR[vtype]
            (v,) = struct.unpack_from(code, buf, pos)
            return v, pos + struct.calcsize(code)
        if vtype == _STRING:
            return self._string(buf, pos)
        if vtype == _ARRAY:
            itype, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if itype in _NP_SCALAR:
                dt = np.dtype(_NP_SCALAR[itype])
                end = pos + dt.itemsize * count
                if end > len(buf):
                    raise IndexError("array runs past the end of the file")
                arr = np.frombuffer(buf[pos:end], dtype=dt)
                return (arr.astype(bool) if itype == 7 else arr.copy()).tolist(), end
            out = []
            for _ in range(count):
                v, pos = self._value(buf, pos, itype, depth + 1)
                out.append(v)
            return out, pos
        raise GGUFError(f"{self.path}: unknown metadata value type {vtype}; {_REDOWNLOAD}.")

    # -- data

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def raw(self, t: GGUFTensorInfo) -> np.ndarray:
        return self._data[t.offset:t.offset + t.nbytes]

    def array(self, t) -> np.ndarray:
        """Dequantize one tensor (info or name) to float32 in its row-major (PyTorch) shape."""
        import gguf
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        if isinstance(t, str):
            t = self.tensor_map[t]
        qtype = GGMLQuantizationType(t.ggml_type)
        raw = self.raw(t)
        if qtype == GGMLQuantizationType.F64:
            return raw.view("<f8").astype(np.float32).reshape(t.shape)
        block, type_size = GGML_QUANT_SIZES[qtype]
        rows = math.prod(t.ne[1:]) if len(t.ne) > 1 else 1
        raw = raw.reshape(rows, t.ne[0] // block * type_size if t.ne else type_size)
        try:
            arr = gguf.quants.dequantize(raw, qtype)
        except NotImplementedError as e:
            raise GGUFError(f"{self.path}: tensor {t.name!r}: {qtype.name} cannot be "
                            f"dequantized by the installed gguf package ({e})") from e
        return np.asarray(arr, dtype=np.float32).reshape(t.shape)


def open_gguf(path) -> GGUFFile:
    return path if isinstance(path, GGUFFile) else GGUFFile(path)


# ----------------------------------------------------------------------------- config


def _f32(x) -> float:
    """A float32 metadata value as the shortest decimal that round-trips (1e-05, not
    9.999999747378752e-06), i.e. the number in the original HF config."""
    return float(str(np.float32(x)))


def _opt_int(v) -> Optional[int]:
    return None if v is None else int(v)


def _arch(g: GGUFFile) -> tuple[str, ArchSpec]:
    arch = g.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(
            f"{g.path}: GGUF architecture {arch!r} is not supported (supported: "
            f"{sorted(ARCHITECTURES)}). Load the original Hugging Face checkpoint instead.")
    return arch, ARCHITECTURES[arch]


def _rope_scaling_from_factors(factors: np.ndarray, cfg_kwargs: dict,
                               path: Path) -> Optional[RopeScaling]:
    """Llama-3.1 files carry RoPE scaling as a ``rope_freqs`` tensor (inverse-frequency
    divisors) rather than metadata. Recover the "llama3" parameters by trying the usual
    values (factor = the largest divisor; original context 8192 and other powers of two;
    low/high frequency factors 1/4, ...) and keep the one that reproduces every divisor."""
    from ..models.decoder import rope_inv_freq

    factors = np.asarray(factors, np.float32).reshape(-1)
    if np.allclose(factors, 1.0):
        return None
    base = ModelConfig(**{**cfg_kwargs, "rope_scaling": None})
    origs = [int(cfg_kwargs["max_position_embeddings"]) // k for k in (16, 8, 4, 2, 1)]
    origs = [8192] + [2 ** e for e in range(5, 18)] + origs  # Llama-3.1: 8192
    for orig in dict.fromkeys(o for o in origs if o > 0):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 8.0)):
            rs = RopeScaling(factor=float(np.max(factors)), low_freq_factor=low,
                             high_freq_factor=high, original_max_position_embeddings=orig)
            scaled = rope_inv_freq(base.replace(rope_scaling=rs))
            if np.allclose(rope_inv_freq(base) / scaled, factors, rtol=1e-4, atol=1e-5):
                return rs
    raise GGUFError(f"{path}: rope_freqs tensor does not match any 'llama3' RoPE scaling; "
                    "this RoPE variant is not supported")


def _need(g: GGUFFile, arch: str, key: str):
    v = g.get(f"{arch}.{key}")
    if v is None:
        raise GGUFError(f"{g.path}: metadata key {arch}.{key} is missing; the file is "
                        "incomplete or from an unsupported converter")
    return v


def _sizes(g: GGUFFile, arch: str) -> dict:
    """The decoder's sizes (the embedding's row count is the vocabulary: padded ones)."""
    hidden = int(_need(g, arch, "embedding_length"))
    n_head = int(_need(g, arch, "attention.head_count"))
    n_kv = g.get(f"{arch}.attention.head_count_kv", n_head)
    if isinstance(n_kv, list):  # per-layer list in some files
        if len(set(n_kv)) != 1:
            raise GGUFError(f"{g.path}: per-layer KV head counts {sorted(set(n_kv))} are "
                            "not supported")
        n_kv = n_kv[0]
    head_dim = int(g.get(f"{arch}.attention.key_length", hidden // n_head))
    tokens = g.get("tokenizer.ggml.tokens")
    emb = g.tensor_map.get("token_embd.weight")
    if emb is not None:
        vocab = emb.shape[0]
    elif tokens is not None:
        vocab = len(tokens)
    else:
        vocab = _need(g, arch, "vocab_size")
    return dict(vocab_size=int(vocab), hidden_size=hidden,
                intermediate_size=int(_need(g, arch, "feed_forward_length")),
                num_layers=int(_need(g, arch, "block_count")), num_heads=n_head,
                num_kv_heads=int(n_kv), head_dim=head_dim)


def _token_ids(g: GGUFFile) -> dict:
    eos = g.get("tokenizer.ggml.eos_token_id")
    return dict(bos_token_id=_opt_int(g.get("tokenizer.ggml.bos_token_id")),
                eos_token_id=_opt_int(eos),
                pad_token_id=_opt_int(g.get("tokenizer.ggml.padding_token_id", eos)),
                eot_token_id=_opt_int(g.get("tokenizer.ggml.eot_token_id")))


def _rope_fields(g: GGUFFile, arch: str, spec: ArchSpec, head_dim: int) -> dict:
    """Refuse partial RoPE and unknown scaling; a linear scaling where the arch has one."""
    rot = g.get(f"{arch}.rope.dimension_count", head_dim)
    if int(rot) != head_dim:
        raise GGUFError(f"{g.path}: partial RoPE (rope.dimension_count {rot} != head_dim "
                        f"{head_dim}) is not supported")
    scaling_type = g.get(f"{arch}.rope.scaling.type")
    if scaling_type == "linear" and spec.linear_rope_scaling:
        return {"rope_scaling": RopeScaling(
            rope_type="linear", factor=_f32(g.get(f"{arch}.rope.scaling.factor", 1.0)))}
    if scaling_type not in (None, "none"):
        raise GGUFError(f"{g.path}: RoPE scaling {scaling_type!r} is not supported")
    return {}


def read_gguf_config(path) -> ModelConfig:
    """The :class:`ModelConfig` described by a GGUF file's metadata (no tensor data read
    except a ``rope_freqs`` vector when present)."""
    g = open_gguf(path)
    arch, spec = _arch(g)
    tensors = g.tensor_map
    kwargs = dict(
        family=spec.family, **_sizes(g, arch),
        rms_norm_eps=_f32(g.get(f"{arch}.attention.layer_norm_rms_epsilon",
                                spec.default_eps)),
        rope_theta=_f32(g.get(f"{arch}.rope.freq_base", spec.default_theta)),
        attention_bias="blk.0.attn_q.bias" in tensors,
        tie_word_embeddings="output.weight" not in tensors,
        causal=True,
        max_position_embeddings=int(g.get(f"{arch}.context_length", 4096)),
        **_token_ids(g))
    if spec.attention_bias and not kwargs["attention_bias"]:
        raise GGUFError(f"{g.path}: a {arch} file without attn_q.bias is not supported")
    kwargs.update(_rope_fields(g, arch, spec, kwargs["head_dim"]))
    if spec.extra_fields is not None:
        kwargs.update(spec.extra_fields(g, arch, kwargs))
    if "rope_freqs.weight" in tensors:
        kwargs["rope_scaling"] = _rope_scaling_from_factors(
            g.array("rope_freqs.weight"), kwargs, g.path)
    try:
        return ModelConfig(**kwargs)
    except ValueError as e:
        raise GGUFError(f"{g.path}: {e}; the file's metadata is not a model this library "
                        "can load") from None


def gguf_weight_hash(path) -> str:
    """Stable, cheap content hash of a GGUF file (hex sha256).

    Hashes a version tag, the file size, the first and the last MiB of the file (header,
    start of the metadata, tail of the tensor data) and the tensor table (name, ggml type,
    dims and offset of every tensor). Reading 2 MiB keeps it O(1) in the file size while a
    different model, quantization, conversion or a truncated copy all change it. It is not
    a guarantee against deliberate edits in the middle of the tensor data.
    """
    g = open_gguf(path)
    h = hashlib.sha256(b"sri_jax-gguf-hash-v1\0")
    h.update(str(g.size).encode() + b"\0")
    with open(g.path, "rb") as f:
        h.update(f.read(_MiB))
        f.seek(max(0, g.size - _MiB))
        h.update(f.read(_MiB))
    for t in g.tensors:
        h.update(f"{t.name}|{t.ggml_type}|{list(t.ne)}|{t.offset}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- loading


def load_gguf_params(path, cfg: Optional[ModelConfig] = None, *, dtype="bfloat16") -> dict:
    """Dequantize every tensor and put it in the decoder's layout (the architecture's
    :class:`~sri_jax.weights.name_maps.NameMap` and its transforms, through
    :func:`~sri_jax.weights.name_maps.plan_load`): the param pytree as jax arrays."""
    from types import SimpleNamespace

    from .hf import load_params

    g = open_gguf(path)
    _, spec = _arch(g)
    cfg = cfg if cfg is not None else read_gguf_config(g)
    tensors = {t.name: TensorSource(t.name, g.path.name, t.type_name, t.shape)
               for t in g.tensors}
    try:
        plan = plan_load(cfg, spec.name_map, tensors, where=str(g.path),
                         config_file="GGUF metadata", dtypes=None)
    except CheckpointMismatchError as e:
        raise GGUFError(f"{e}\n  (a GGUF file is one download: if it is incomplete, "
                        f"{_REDOWNLOAD})") from None
    try:
        return load_params(plan, {g.path.name: SimpleNamespace(get=g.array)},
                           resolve_dtype(dtype))
    except ValueError as e:  # a Q/K tensor whose rows do not split into the heads
        raise GGUFError(f"{g.path}: {e}") from None


def load_gguf(path, *, dtype="bfloat16", tokenizer: bool = True):
    """Load a GGUF checkpoint.

    Returns ``(config, params, tokenizer, weight_hash, chat_template)``: the
    :class:`ModelConfig` from the metadata, the decoder param pytree as jax arrays of
    ``dtype``, a transformers tokenizer converted from the embedded vocabulary (None when
    ``tokenizer=False`` or the file has none), :func:`gguf_weight_hash`, and the embedded
    ``tokenizer.chat_template`` (or None).
    """
    path = Path(os.path.expanduser(str(path))).resolve()
    g = GGUFFile(path)
    cfg = read_gguf_config(g)
    params = load_gguf_params(g, cfg, dtype=dtype)  # one parameter on the host at a time
    weight_hash = gguf_weight_hash(g)
    chat_template = g.get("tokenizer.chat_template")
    tok = (load_gguf_tokenizer(g, g.get("general.architecture"))
           if tokenizer and "tokenizer.ggml.tokens" in g.metadata else None)
    return cfg, params, tok, weight_hash, chat_template


def _direct_tokenizer_class(arch: str):
    """The class ``AutoTokenizer`` picks for a GGUF of this architecture when the folder has no
    tokenizer files: ``TOKENIZER_MAPPING.get(config class, TokenizersBackend)`` (transformers
    5). None when that cannot be determined (other transformers versions)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    cls = TOKENIZER_MAPPING.get(CONFIG_MAPPING[arch], TokenizersBackend)
    if isinstance(cls, type) and issubclass(cls, TokenizersBackend) \
            and cls.__name__ != "MistralCommonBackend":
        return cls
    return None


def load_gguf_tokenizer(path, arch: Optional[str] = None):
    """A transformers tokenizer built from the vocabulary embedded in a GGUF file (a path or a
    :class:`GGUFFile`): what ``AutoTokenizer.from_pretrained(dir, gguf_file=name)`` returns.

    Byte-level BPE files (SmolLM2, Qwen2.5, Llama-3) and Gemma-3 files are built from the
    metadata by :mod:`sri_jax.weights.gguf_tokenizer` (no PyTorch). Other
    files, or a folder with tokenizer/config files of its own (which transformers prefers),
    take transformers' route: the class AutoTokenizer would pick
    (:func:`_direct_tokenizer_class`, when ``arch`` is given), else AutoTokenizer; that route
    needs PyTorch.
    """
    from .gguf_tokenizer import build_gguf_tokenizer, supported

    g = open_gguf(path)
    path = g.path
    own_files = any((path.parent / f).exists()
                    for f in ("tokenizer_config.json", "tokenizer.json", "config.json"))
    if not own_files and supported(g.metadata):
        try:
            return build_gguf_tokenizer(g.metadata)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise GGUFError(f"{path}: the embedded tokenizer metadata is not usable "
                            f"({type(e).__name__}: {e}); {_REDOWNLOAD}") from e
    return _transformers_gguf_tokenizer(path, arch, own_files)


def _transformers_gguf_tokenizer(path: Path, arch: Optional[str], own_files: bool):
    """transformers' own GGUF tokenizer (needs PyTorch). AutoTokenizer parses the whole file
    once more only to pick the tokenizer class from the model type, so when ``arch`` is given
    and the folder holds no files of its own the class it would pick is built directly."""
    from transformers import AutoTokenizer

    if arch is not None and not own_files:
        try:
            cls = _direct_tokenizer_class(arch)
            if cls is not None:
                return cls.from_pretrained(str(path.parent), gguf_file=path.name)
        except Exception:  # other transformers versions: take the documented route
            pass
    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:
        import importlib.util

        hint = ("" if importlib.util.find_spec("torch") is not None else
                "; transformers needs PyTorch to read this GGUF tokenizer: pip install torch")
        raise GGUFError(f"{path}: transformers could not build the embedded tokenizer "
                        f"({type(e).__name__}: {e}){hint}") from e
