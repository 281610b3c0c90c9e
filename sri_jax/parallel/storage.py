"""Output folders that may be local paths or URLs (``gs://bucket/run``, ``s3://...``,
``memory://...``): the few operations the tracer needs, each one safe against preemption.

Local paths use ``os`` directly (write to a hidden temporary file, then ``os.replace``).
URLs go through fsspec (``pip install gcsfs`` for ``gs://``); an object-store upload only
becomes visible once complete, so a killed writer never leaves a half-written shard.
"""

from __future__ import annotations

import fnmatch
import io
import os
from pathlib import Path
from typing import Union

__all__ = ["TraceStore", "is_url"]


def is_url(path) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


class TraceStore:
    """A folder of files: ``exists``, ``read_bytes``, ``write_bytes`` (atomic), ``list``."""

    def __init__(self, root: Union[str, os.PathLike]):
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://"):]
        self.url = is_url(root)
        if self.url:
            try:
                import fsspec
            except ImportError as e:  # pragma: no cover - fsspec ships with our deps
                raise ImportError(f"{root}: URLs need fsspec (pip install fsspec gcsfs)") from e
            try:
                self.fs, path = fsspec.core.url_to_fs(root)
            except (ImportError, ValueError) as e:
                proto = root.split("://", 1)[0]
                hint = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs"}.get(proto, f"an fsspec "
                                                                              f"{proto} backend")
                raise ImportError(f"cannot open {root}: install {hint} "
                                  f"(pip install {hint}) ({e})") from e
            self.root = path.rstrip("/")
            self.display = root.rstrip("/")
        else:
            self.fs = None
            self.root = Path(os.path.expanduser(os.fspath(root)))
            self.display = str(self.root)

    def __repr__(self):
        return f"TraceStore({self.display!r})"

    def handle(self):
        """What callers get back: a Path for local folders, the URL string otherwise."""
        return self.display if self.url else self.root

    def path(self, name: str):
        return f"{self.root}/{name}" if self.url else self.root / name

    def mkdir(self):
        if self.url:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except Exception:  # noqa: BLE001 - object stores have no real folders
                pass
        else:
            self.root.mkdir(parents=True, exist_ok=True)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name)) if self.url else self.path(name).exists()

    def read_bytes(self, name: str) -> bytes:
        if self.url:
            return self.fs.cat_file(self.path(name))
        return self.path(name).read_bytes()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_bytes(self, name: str, data: bytes) -> None:
        """Atomic: readers see the old file, no file, or the whole new one."""
        if self.url:
            self.fs.pipe_file(self.path(name), data)
            return
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names (not paths) in the folder matching a glob ``pattern`` (one listing
        call, also on object stores)."""
        if self.url:
            try:
                entries = self.fs.ls(self.root, detail=False)
            except FileNotFoundError:
                return []
            names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        else:
            if not self.root.is_dir():
                return []
            names = os.listdir(self.root)
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def write_parquet(self, name: str, table) -> None:
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(name, buf.getvalue())

    def parquet_metadata(self, name: str):
        """The Parquet footer (row count, key-value metadata) without reading the data; raises
        (pyarrow.ArrowInvalid, OSError) when the file is not a complete Parquet file."""
        import pyarrow.parquet as pq

        if self.url:
            with self.fs.open(self.path(name), "rb") as f:
                return pq.ParquetFile(f).metadata
        return pq.ParquetFile(self.path(name)).metadata

    def move(self, name: str, new_name: str) -> None:
        """Rename a file inside the folder (replacing ``new_name``)."""
        if self.url:
            self.fs.mv(self.path(name), self.path(new_name))
        else:
            os.replace(self.path(name), self.path(new_name))

    def read_parquet(self, name: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.url:
            return pq.read_table(pa.BufferReader(self.read_bytes(name)))
        return pq.read_table(self.path(name))
