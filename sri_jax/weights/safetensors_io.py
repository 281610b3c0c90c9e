"""A small, dependency-free reader and writer for the safetensors format.

File layout (https://github.com/huggingface/safetensors)::

    [8 bytes]  N, the header length, unsigned little-endian
    [N bytes]  UTF-8 JSON: {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]},
                            ..., optional "__metadata__": {str: str}}
    [rest]     raw little-endian tensor bytes; offsets are relative to the byte after the header

The reader memory-maps the file (``np.memmap``), so a tensor is a zero-copy view that is paged
in only when read: loading an 8B checkpoint tensor by tensor never holds the whole file in
anonymous host memory. Nothing is ever unpickled. Every header entry is validated up front
(dtype, shape, offsets inside the file), so a truncated or corrupt download fails at open time
with an error naming the file rather than later with garbage values.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Optional, Union

import ml_dtypes
import numpy as np

__all__ = [
    "SafetensorsError", "SafetensorsFile", "TensorInfo", "read_safetensors",
    "save_safetensors", "DTYPES",
]

# safetensors dtype code -> numpy dtype (little-endian).
DTYPES: dict[str, np.dtype] = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_BY_KIND: dict[tuple[str, int], str] = {
    (d.kind, d.itemsize): code for code, d in DTYPES.items() if code != "BF16"}

_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class SafetensorsError(ValueError):
    """A safetensors file is corrupt, truncated or not a safetensors file at all."""


def _corrupt(path, why: str) -> SafetensorsError:
    return SafetensorsError(
        f"{path}: {why}. The file is corrupt or incompletely downloaded; delete it and "
        f"download it again (e.g. `huggingface-cli download <repo> {Path(path).name}`).")


class TensorInfo(NamedTuple):
    name: str
    dtype: str            # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int            # byte offset inside the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _read_header(path: Path, size: int) -> tuple[dict, int]:
    """(the JSON header as a dict, where the data section starts) of a file of ``size``
    bytes."""
    if size < 8:
        raise _corrupt(path, f"it is only {size} bytes long (a safetensors file starts "
                             "with an 8-byte header length)")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > _MAX_HEADER:
            raise _corrupt(path, f"the header length field says {n} bytes (limit "
                                 f"{_MAX_HEADER}); this is not a safetensors file")
        if 8 + n > size:
            raise _corrupt(path, f"the header needs {n} bytes but the file has only "
                                 f"{size - 8} after the length field (truncated)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"its JSON header does not parse ({e})") from None
    except RecursionError:
        raise _corrupt(path, "its JSON header nests too deeply to be a tensor table") \
            from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its JSON header is not an object")
    return header, 8 + n


def _tensor_info(name: str, ent, data_size: int) -> Union[TensorInfo, str]:
    """One header entry as a :class:`TensorInfo`, or the problem with it."""
    try:
        code = ent["dtype"]
        shape = tuple(int(s) for s in ent["shape"])
        begin, end = (int(o) for o in ent["data_offsets"])
    except (TypeError, KeyError, ValueError):
        return f"tensor {name!r} has a malformed header entry {ent!r}"
    if code not in DTYPES:
        return f"tensor {name!r} has unsupported dtype {code!r} (supported: {', '.join(DTYPES)})"
    if any(s < 0 for s in shape):
        return f"tensor {name!r} has a negative dimension {shape}"
    want = math.prod(shape) * DTYPES[code].itemsize
    if not 0 <= begin <= end or end - begin != want:
        return (f"tensor {name!r} ({code} {list(shape)}) needs {want} bytes but its offsets "
                f"are [{begin}, {end}]")
    if end > data_size:
        return (f"tensor {name!r} ends at byte {end} of the data section, which is only "
                f"{data_size} bytes (truncated)")
    return TensorInfo(name, code, shape, begin, end)


def _overlaps(infos) -> list[str]:
    """No two tensors may share bytes (one would silently alias the other)."""
    spans = sorted((i.begin, i.end, i.name) for i in infos if i.end > i.begin)
    return [f"tensors {n0!r} [{b0}, {e0}] and {n1!r} [{b1}, {e1}] overlap"
            for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]) if b1 < e0]


class SafetensorsFile:
    """Lazy, memory-mapped view of one ``.safetensors`` file.

    >>> f = SafetensorsFile("model.safetensors")
    >>> f.keys(), f.info("model.norm.weight").shape
    >>> w = f.get("model.norm.weight")         # read-only view of the mapped bytes

    The header is parsed and validated in the constructor; tensor data is mapped lazily.
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.file_size = self.path.stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"safetensors file {self.path} does not exist") from None
        self.metadata: dict[str, str] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._mm: Optional[np.memmap] = None
        self._parse_header()

    # ---------------------------------------------------------------- header

    def _parse_header(self):
        path = self.path
        header, self.data_start = _read_header(path, self.file_size)
        data_size = self.file_size - self.data_start
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise _corrupt(path, "its __metadata__ entry is not an object")
        self.metadata = {str(k): str(v) for k, v in meta.items()}
        problems = []
        for name, ent in header.items():
            info = _tensor_info(name, ent, data_size)
            if isinstance(info, str):
                problems.append(info)
            else:
                self._infos[name] = info
        problems += _overlaps(self._infos.values())
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"]
                                     if len(problems) > 10 else [])
            raise _corrupt(path, "its header is inconsistent with its contents: "
                                 + "; ".join(shown))

    # ---------------------------------------------------------------- access

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is not in {self.path}") from None

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self._infos)

    def _map(self) -> np.memmap:
        if self._mm is None:
            if self.file_size == self.data_start:  # no tensor data at all
                self._mm = np.zeros(0, np.uint8)
            else:
                self._mm = np.memmap(self.path, dtype=np.uint8, mode="r",
                                     offset=self.data_start)
        return self._mm

    def get(self, name: str, *, copy: bool = False) -> np.ndarray:
        """The tensor as a numpy array (a read-only view of the mapped file unless ``copy``)."""
        inf = self.info(name)
        dt = DTYPES[inf.dtype]
        if inf.nbytes == 0:
            return np.zeros(inf.shape, dt)
        raw = self._map()[inf.begin:inf.end]
        arr = raw.view(dt).reshape(inf.shape)
        return np.array(arr) if copy else arr

    def close(self):
        """Drop the mapping (views handed out keep their own reference to it)."""
        self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"SafetensorsFile({str(self.path)!r}, {len(self._infos)} tensors)"


def read_safetensors(path, *, copy: bool = True) -> dict[str, np.ndarray]:
    """All tensors of one file as a dict (copies by default, so the file may be deleted)."""
    f = SafetensorsFile(path)
    return {k: f.get(k, copy=copy) for k in f.keys()}


def _code_of(arr: np.ndarray) -> str:
    dt = arr.dtype
    if dt == DTYPES["BF16"]:
        return "BF16"
    code = _BY_KIND.get((dt.kind, dt.itemsize))
    if code is None:
        raise TypeError(f"dtype {dt} cannot be stored in safetensors "
                        f"(supported: {', '.join(DTYPES)})")
    return code


def save_safetensors(path, tensors: Mapping[str, np.ndarray],
                     metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write numpy arrays (bf16 via ``ml_dtypes``) as a safetensors file, atomically.

    The file is written to a temporary name in the same directory and renamed into place, so
    an interrupted write never leaves a half-written file under ``path``. Tensors are stored
    in key order, the header is padded with spaces to a multiple of 8 bytes (as the reference
    writer does). Anything with ``__array__`` (e.g. a jax array) is converted with numpy.
    """
    path = Path(path)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        arr = np.asarray(tensors[name])
        code = _code_of(arr)
        arr = arr.astype(DTYPES[code], copy=False)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d arrays 1-d)
            arr = arr.copy(order="C")
        header[name] = {"dtype": code, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)))
            fh.write(blob)
            for arr in arrays:
                fh.write(memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else b"")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
