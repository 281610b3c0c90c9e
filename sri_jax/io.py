"""Crash-safe writes of artifact folders (centers, detectors, adapters)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary sibling folder to fill; on success it takes ``path``'s place.

    An existing ``path`` is moved aside to ``.NAME.old`` only once the new folder is complete,
    and removed after the swap; if the process dies between the two renames, the next write
    (or :func:`recover`) puts the old folder back. On an error the temporary folder is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = _old(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(path) -> None:
    """Restore ``path`` from ``.NAME.old`` when a write died between its two renames."""
    path = Path(path)
    old = _old(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)


def json_default(o):
    """``json.dumps`` fallback: numpy scalars -> numbers, arrays -> lists, anything else -> str."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")
