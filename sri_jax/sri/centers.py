"""Saving, loading and checking SRI centers (calibrating them: :mod:`sri_jax.calibration`).

On disk a centers artifact is a directory::

    artifact.json kind "centers", format 2 (see :mod:`sri_jax.artifacts`)
    centers.npz   harmless [T, D] float32, harmful [T, D] float32
    meta.json     how they were made: everything that changes sigma (:data:`SIGMA_KEYS`),
                  the model name, dtype, prompt-set hashes, samples kept per class, version

written to a temporary sibling and renamed into place (:func:`sri_jax.artifacts.atomic_directory`):
only into a new or empty folder, or over other centers with ``overwrite=True``.

One check, used wherever centers meet a run or a detector (:func:`compare_meta`): every field
of :data:`SIGMA_KEYS` recorded on both sides must agree, and a detector also binds to the
arrays themselves (:func:`centers_fingerprint`). ``tau`` is deliberately NOT part of the
sampler fingerprint (the center arrays do not depend on it), but sigma and the reference curves
stored with the centers do, so it is recorded as a field of its own and checked like the rest:
centers calibrated at tau 0.1 are refused for a run at tau 0.2. The ``judge`` (which refusal
labels selected the samples) is recorded and compared with a detector's centers; a run's own
judge only labels its records, so it is not compared with the centers.

Trust: :func:`load_centers` refuses centers it cannot verify (no ``meta.json``, or metadata
without ``weight_hash`` / ``sampler``, or a format-2 artifact missing any sigma field) unless
``allow_unverified=True`` (``--trust-centers``). Centers written before format 2 (no
``artifact.json``) lack ``tau``, ``eps``, ``judge``, ``system_prompt`` and
``chat_template_hash``; they load, and those fields are simply not compared.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .._version import __version__
from ..artifacts import (ARTIFACT_FILE, ArtifactError, atomic_directory, load_arrays, read_json,
                         recover, save_arrays, write_json)
from .signal import EPS, Centers

CENTERS_FORMAT = 2
SAMPLER_KEYS_IGNORED = ("tau",)  # centers do not depend on it; recorded as its own field
# Everything that changes sigma for given prompts: checked wherever centers meet a run or a
# detector. ``sampler`` is the whole sampler config less tau.
SIGMA_KEYS = ("weight_hash", "dim", "sampler", "layer", "pooling", "steps", "gen_length",
              "block_length", "tau", "eps", "judge", "system_prompt", "chat_template_hash")
REQUIRED_KEYS = ("weight_hash", "sampler")  # without them centers cannot be verified at all
FIX_RECALIBRATE = ("calibrate centers for this model and sampler config (sri_jax.calibrate / "
                   "`sri-jax calibrate`)")


class CentersError(ArtifactError):
    """A centers folder is damaged, incomplete or cannot be verified."""


class CentersMismatchError(ValueError):
    """Centers do not match the run or the detector they are used with."""


def prompts_hash(prompts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def centers_fingerprint(centers) -> str:
    """Fingerprint of the center arrays themselves (float32 bytes and shapes)."""
    h = hashlib.sha256()
    for a in (centers.harmless, centers.harmful):
        a = np.ascontiguousarray(np.asarray(a, np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def sampler_fingerprint(cfg) -> dict:
    d = cfg.to_dict()
    for k in SAMPLER_KEYS_IGNORED:
        d.pop(k, None)
    for k, default in (("cache", "none"), ("threshold", None)):  # exact decoding: recorded as
        if d.get(k) == default:                                  # before these fields existed
            d.pop(k)
    return d


def chat_template_hash(model) -> Optional[str]:
    """Hash of the chat template in effect (the model's, else its tokenizer's), or None."""
    t = model.chat_template
    if t is None:
        t = getattr(model.tokenizer, "chat_template", None)
    return hashlib.sha256(t.encode()).hexdigest()[:16] if isinstance(t, str) else None


def run_meta(model, cfg, *, system_prompt="default") -> dict:
    """The metadata that must agree between centers and the run that uses them."""
    sp = model.system_prompt if system_prompt == "default" else system_prompt
    meta = {"model": model.name, "weight_hash": model.weight_hash,
            "sampler": sampler_fingerprint(cfg), "layer": cfg.layer, "pooling": cfg.pooling,
            "steps": cfg.steps, "gen_length": cfg.gen_length, "block_length": cfg.block_length,
            "tau": cfg.tau, "eps": EPS, "dim": model.config.hidden_size,
            "system_prompt": sp or None, "chat_template_hash": chat_template_hash(model),
            "safe_prompts": bool(getattr(model, "safe_prompts", False)),  # recorded, not compared
            "dtype": str(np.dtype(model.dtype)), "version": __version__}
    return meta


def compare_meta(centers_meta: Mapping, other: Mapping, other_name: str) -> list:
    """One problem string per :data:`SIGMA_KEYS` field recorded on both sides that differs."""
    problems = []
    for k in SIGMA_KEYS:
        if k not in centers_meta or k not in other:
            continue
        a, b = centers_meta[k], other[k]
        if k == "sampler" and isinstance(a, Mapping) and isinstance(b, Mapping):
            diff = sorted(j for j in set(a) | set(b) if a.get(j) != b.get(j))
            if diff:
                problems.append("sampler config differs: " + ", ".join(
                    f"{j}: centers {a.get(j)!r} vs {other_name} {b.get(j)!r}" for j in diff))
        elif _norm(a) != _norm(b):
            problems.append(f"{k}: centers {a!r} vs {other_name} {b!r}")
    return problems


def _norm(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def check_match(centers_meta: Mapping, other: Mapping, other_name: str, *, what: str,
                fix: str, problems=(), skip=(), complete: bool = False) -> None:
    """The one compatibility check of centers against the run or detector (``other_name``)
    that uses them. Raises :class:`CentersMismatchError` listing every problem: the caller's
    own ``problems`` (shape, arrays, weights), every :data:`SIGMA_KEYS` field recorded on both
    sides that differs (:func:`compare_meta`, fields in ``skip`` left to the caller) and, with
    ``complete``, every such field ``other`` recorded that the centers lack; then ``fix``."""
    problems = list(problems) + [p for p in compare_meta(centers_meta, other, other_name)
                                 if p.split(":", 1)[0] not in skip]
    if complete:
        problems += [f"{k}: {other_name} {other[k]!r}, centers have none" for k in SIGMA_KEYS
                     if k in other and k not in centers_meta]
    if problems:
        raise CentersMismatchError(f"these centers do not match {what}: "
                                   + "; ".join(problems) + f". {fix}")


def check_compatible(centers: Centers, model, cfg, *, system_prompt="default") -> None:
    """Raise :class:`CentersMismatchError` naming every differing field when centers were
    calibrated for another model, sampler config, tau, system prompt or chat template.

    A ``Centers`` object made in Python with empty ``meta`` is the caller's own: only its
    shape is checked. Files are verified by :func:`load_centers`."""
    centers.check(cfg.steps, model.config.hidden_size)
    meta = dict(centers.meta)
    if not meta:
        return
    have = run_meta(model, cfg, system_prompt=system_prompt)
    weights = []
    if meta.get("weight_hash") and have["weight_hash"] and \
            meta["weight_hash"] != have["weight_hash"]:
        weights.append(f"model weights differ (centers: {meta.get('model')!r} "
                       f"hash {meta['weight_hash']}, run: {model.name!r} hash "
                       f"{have['weight_hash']})")
    check_match(meta, have, "run", what="this run", problems=weights, skip=("weight_hash",),
                fix=f"{FIX_RECALIBRATE[0].upper()}{FIX_RECALIBRATE[1:]}.")


def save_centers(centers: Centers, path, *, overwrite: bool = False) -> Path:
    """Write centers to folder ``path`` (new or empty; over other centers with
    ``overwrite=True``)."""
    with atomic_directory(path, "centers", fmt=CENTERS_FORMAT, overwrite=overwrite) as tmp:
        save_arrays(tmp / "centers.npz", harmless=np.asarray(centers.harmless, np.float32),
                    harmful=np.asarray(centers.harmful, np.float32))
        write_json(tmp / "meta.json", dict(centers.meta))
    return Path(path)


def load_centers(path, *, allow_unverified: bool = False) -> Centers:
    """Centers saved by :func:`save_centers`. Damaged files raise :class:`CentersError` naming
    the file; centers that cannot be verified (see the module docstring) are refused unless
    ``allow_unverified=True``."""
    path = Path(path)
    recover(path)
    arrays, meta_file = path / "centers.npz", path / "meta.json"
    if not arrays.is_file():
        raise FileNotFoundError(f"no centers at {path} (expected {arrays}); create them with "
                                "`sri-jax calibrate` or sri_jax.calibrate(...)")
    fix = f"the file is damaged: {FIX_RECALIBRATE} again"
    harmless, harmful = load_arrays(arrays, ("harmless", "harmful"), "the center arrays", fix,
                                    error=CentersError)
    meta = read_json(meta_file, "centers metadata", fix) if meta_file.is_file() else None
    try:
        centers = Centers(harmless, harmful, meta or {})
    except ValueError as e:
        raise CentersError(f"{arrays}: {e}") from None
    if not allow_unverified:
        _check_verifiable(path, meta)
    return centers


def _check_verifiable(path: Path, meta: Optional[dict]) -> None:
    trust = ("pass allow_unverified=True (--trust-centers) to use them anyway, or "
             + FIX_RECALIBRATE)
    if meta is None:
        raise CentersError(f"{path}: centers without meta.json cannot be checked against a "
                           f"model or sampler; {trust}")
    missing = [k for k in REQUIRED_KEYS if not meta.get(k)]
    if (path / ARTIFACT_FILE).is_file():  # format 2 records every sigma field
        missing += [k for k in SIGMA_KEYS if k not in meta and k not in missing]
    if missing:
        raise CentersError(f"{path}/meta.json lacks {', '.join(missing)}, so these centers "
                           f"cannot be verified; {trust}")
