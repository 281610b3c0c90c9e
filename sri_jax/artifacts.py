"""Artifact folders (centers, detectors, adapters, fine-tune checkpoints, GCG runs): where one
may be written, how it is written atomically, its header, and its payload files.

Every artifact folder carries a small header, ``artifact.json`` = ``{"kind", "format",
"library"}``. A write goes only

* into a folder that does not exist yet or is empty, or
* over an artifact of the SAME kind, when the caller says ``overwrite=True`` (``--overwrite``
  on the command line), and only if that folder holds nothing but the artifact's own files.

Anything else (a folder with other files, an artifact of another kind, the current directory
or one of its parents) is refused with :class:`OutputFolderError` before anything is written.
Artifacts written before the header existed are recognised by their files (:data:`KINDS`).

Payloads: JSON metadata (:func:`write_json` / :func:`read_json`), a pytree of arrays as an
orbax checkpoint folder (:func:`save_tree` / :func:`restore_tree`), or named arrays in an
``.npz`` file (:func:`save_arrays` / :func:`load_arrays`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from ._version import __version__

ARTIFACT_FILE = "artifact.json"

# kind -> (files that identify an artifact written before artifact.json existed,
#          every entry an artifact of this kind may hold)
KINDS = {
    "centers": ({"centers.npz", "meta.json"}, {"centers.npz", "meta.json"}),
    "detector": ({"detector.json", "params"}, {"detector.json", "params"}),
    "adapter": ({"adapter.json", "adapter"}, {"adapter.json", "adapter", "eval.json"}),
    "finetune-checkpoints": ({"run.json"}, {"run.json"}),  # plus step_* folders
    "finetune-step": ({"state", "progress.json"}, {"state", "progress.json"}),  # one step_*
    "gcg": ({"gcg.json"}, {"gcg.json"}),  # a GCG run's state (sri_jax.gcg)
    "diffusion-adapter": ({"diffusion.json", "adapter.npz"},  # sri_jax.diffusion_adapt
                          {"diffusion.json", "adapter.npz", "eval.json"}),
}


class OutputFolderError(ValueError):
    """An artifact would be written where it could destroy something it does not own."""


class ArtifactError(ValueError):
    """An artifact on disk is damaged, incomplete or of the wrong kind."""


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _own(kind: str, name: str) -> bool:
    if name == ARTIFACT_FILE or name in KINDS[kind][1]:
        return True
    return kind == "finetune-checkpoints" and name.startswith(("step_", ".step_"))


def artifact_kind(path) -> Optional[str]:
    """The kind of artifact folder ``path`` holds (header first, else its files), or None."""
    path = Path(path)
    head = path / ARTIFACT_FILE
    if head.is_file():
        try:
            kind = json.loads(head.read_text()).get("kind")
        except (ValueError, AttributeError, RecursionError, OSError):
            return None
        return kind if kind in KINDS else None
    if not path.is_dir():
        return None
    names = set(_entries(path))
    for kind, (marks, _) in KINDS.items():
        if marks <= names:
            return kind
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _fix(kind: str) -> str:
    return ("choose a new or empty folder, or pass --overwrite (overwrite=True) to replace "
            f"{_a(kind)}")


def check_output(path, kind: str, *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputFolderError` unless a ``kind`` artifact may be written at ``path``
    (see the module docstring). Call it before any compute. Returns ``Path(path)``."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; one of {sorted(KINDS)}")
    path = Path(path)
    where = os.fspath(path)
    resolved = path.expanduser().resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputFolderError(f"output folder {where!r} is the current directory or one of "
                                f"its parents; name a new subfolder for the {kind}")
    if not path.exists():
        if path.is_symlink():
            raise OutputFolderError(f"output folder {where} is a dangling symlink; "
                                    f"{_fix(kind)}")
        return path
    if not path.is_dir():
        raise OutputFolderError(f"output {where} is a file, not a folder; {_fix(kind)}")
    names = _entries(path)
    if not names:
        return path
    found = artifact_kind(path)
    if found != kind:
        what = f"{_a(found)} artifact" if found else \
            f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} ({_listing(names)})"
        raise OutputFolderError(f"output folder {where} is not empty and holds {what}, not "
                                f"{_a(kind)}; choose a new or empty folder (nothing was written)")
    foreign = [n for n in names if not _own(kind, n)]
    if foreign:
        raise OutputFolderError(f"output folder {where} holds {_a(kind)} but also other files "
                                f"({_listing(foreign)}), which replacing it would delete; "
                                "choose a new or empty folder (nothing was written)")
    if not overwrite:
        raise OutputFolderError(f"output folder {where} already holds {_a(kind)}; pass "
                                f"--overwrite (overwrite=True) to replace it, or choose "
                                "another folder (nothing was written)")
    return path


def _listing(names, limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def write_header(folder, kind: str, fmt: int) -> None:
    (Path(folder) / ARTIFACT_FILE).write_text(json.dumps(
        {"kind": kind, "format": fmt, "library": __version__}, sort_keys=True) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path, kind: str, *, fmt: int = 1, overwrite: bool = False):
    """Yield a temporary sibling folder to fill; on success it takes ``path``'s place.

    ``path`` must pass :func:`check_output` (checked again here, before and at the swap). The
    temporary folder gets the ``artifact.json`` header and the usual permissions (0777 less the
    umask, like ``mkdir``). An artifact being replaced is moved aside to ``.NAME.old`` only once
    the new folder is complete, and removed after the swap; if the process dies between the two
    renames, the next write (or :func:`recover`) puts the old folder back. On an error the
    temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    recover(path)
    check_output(path, kind, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write_header(tmp, kind, fmt)
        yield tmp
        check_output(path, kind, overwrite=overwrite)
        if path.exists() and any(path.iterdir()):
            old = _old(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # over a missing or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(path) -> None:
    """Restore ``path`` from ``.NAME.old`` when a write died between its two renames."""
    path = Path(path)
    old = _old(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)


def read_json(path, what: str, fix: str) -> dict:
    """A JSON object from ``path``, or :class:`ArtifactError` naming the file and ``fix``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(f"{path}: {what} is not valid JSON ({why}); {fix}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {what} must be a JSON object, got a "
                            f"{type(data).__name__}; {fix}")
    return data


def write_json(path, obj, *, indent: Optional[int] = 2) -> None:
    """``obj`` as JSON (sorted keys, numpy values as numbers) to the file ``path``."""
    Path(path).write_text(json.dumps(obj, indent=indent, sort_keys=True, default=json_default)
                          + "\n")


def save_tree(directory, tree) -> None:
    """A pytree of arrays as an orbax checkpoint folder ``directory`` (not there yet)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(Path(directory).absolute(), tree)
        ckptr.wait_until_finished()


def restore_tree(directory, target):
    """The pytree saved by :func:`save_tree`, restored into the structure of ``target``
    (arrays of the saved shapes and dtypes)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(Path(directory).absolute(), target)


def save_arrays(path, **arrays) -> None:
    """Named numpy arrays to the ``.npz`` file ``path``."""
    import numpy as np

    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path, names, what: str, fix: str, error=ArtifactError) -> list:
    """The arrays ``names`` of an ``.npz`` file (no pickles), or ``error`` naming the file,
    ``what`` it holds and the ``fix``."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return [np.asarray(z[n]) for n in names]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{path}: cannot read {what} ({why}); {fix}") from None


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
