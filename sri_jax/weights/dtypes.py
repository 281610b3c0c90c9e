"""The parameter dtype of a load: a name, a numpy / jax float dtype, or "auto"."""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["resolve_dtype"]

_NAMES = {"bfloat16": ml_dtypes.bfloat16, "bf16": ml_dtypes.bfloat16, "float32": np.float32,
          "fp32": np.float32, "f32": np.float32, "float16": np.float16, "fp16": np.float16,
          "f16": np.float16, "half": np.float16}
_LOADABLE = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32), np.dtype(np.float16))


def resolve_dtype(dtype) -> np.dtype:
    """"bfloat16" | "float32" | "float16" (or a numpy / jax float dtype) -> numpy dtype.

    "auto": float32 on CPU (bf16 matmuls are slow there), bfloat16 on accelerators."""
    if isinstance(dtype, str):
        key = dtype.lower()
        if key == "auto":
            import jax

            key = "float32" if jax.default_backend() == "cpu" else "bfloat16"
        if key not in _NAMES:
            raise ValueError(f"dtype {dtype!r}: use 'bfloat16', 'float32', 'float16' or 'auto'")
        return np.dtype(_NAMES[key])
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype {dtype!r}: use 'bfloat16', 'float32' or 'float16'") from None
    if dt not in _LOADABLE:
        raise ValueError(f"dtype {dt}: weights can be loaded as bfloat16, float32 or float16")
    return dt
