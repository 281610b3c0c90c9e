"""Calibrating, saving and loading SRI centers.

On disk a centers artifact is a directory::

    centers.npz   harmless [T, D] float32, harmful [T, D] float32
    meta.json     how they were made: model name and weight hash, sampler config, layer,
                  pooling, T, D, dtype, prompt-set hashes, samples kept per class, version

written to a temporary sibling and renamed into place, so a crash never leaves a half-written
artifact and an existing one is replaced only by a complete new one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..io import atomic_directory, recover
from .signal import Centers, centers_from_activations, sri_signal

SAMPLER_KEYS_IGNORED = ("tau",)  # only maps distances to sigma; centers are independent of it


def prompts_hash(prompts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def sampler_fingerprint(cfg) -> dict:
    d = cfg.to_dict()
    for k in SAMPLER_KEYS_IGNORED:
        d.pop(k, None)
    return d


def run_meta(model, cfg) -> dict:
    """The metadata that must agree between centers and the run that uses them."""
    import sri_jax

    return {"model": model.name, "weight_hash": model.weight_hash,
            "sampler": sampler_fingerprint(cfg), "layer": cfg.layer, "pooling": cfg.pooling,
            "steps": cfg.steps, "dim": model.config.hidden_size,
            "dtype": str(np.dtype(model.dtype)), "version": sri_jax.__version__}


def check_compatible(centers: Centers, model, cfg) -> None:
    """Raise a clear error when centers were calibrated for another model or sampler."""
    centers.check(cfg.steps, model.config.hidden_size)
    meta = dict(centers.meta)
    if not meta:
        return  # hand-made centers: shapes are all we can check
    problems = []
    if meta.get("weight_hash") and model.weight_hash and meta["weight_hash"] != model.weight_hash:
        problems.append(f"model weights differ (centers: {meta.get('model')!r} "
                        f"hash {meta['weight_hash']}, run: {model.name!r} hash {model.weight_hash})")
    want = meta.get("sampler")
    if want is not None:
        have = sampler_fingerprint(cfg)
        diff = {k: (want.get(k), have.get(k)) for k in set(want) | set(have)
                if want.get(k) != have.get(k)}
        if diff:
            problems.append("sampler config differs: " + ", ".join(
                f"{k}: centers {a!r} vs run {b!r}" for k, (a, b) in sorted(diff.items())))
    if problems:
        raise ValueError("these centers do not match this run: " + "; ".join(problems)
                         + ". Calibrate centers for this model and sampler config "
                         "(sri_jax.calibrate / `sri-jax calibrate`).")


def save_centers(centers: Centers, path) -> Path:
    with atomic_directory(path) as tmp:
        np.savez(tmp / "centers.npz", harmless=np.asarray(centers.harmless, np.float32),
                 harmful=np.asarray(centers.harmful, np.float32))
        (tmp / "meta.json").write_text(json.dumps(dict(centers.meta), indent=2, sort_keys=True,
                                                  default=str))
    return Path(path)


def load_centers(path) -> Centers:
    path = Path(path)
    recover(path)
    arrays, meta = path / "centers.npz", path / "meta.json"
    if not arrays.is_file():
        raise FileNotFoundError(f"no centers at {path} (expected {arrays}); create them with "
                                "`sri-jax calibrate` or sri_jax.calibrate(...)")
    with np.load(arrays) as z:
        harmless, harmful = z["harmless"], z["harmful"]
    m = json.loads(meta.read_text()) if meta.is_file() else {}
    return Centers(harmless, harmful, m)


def calibrate(model, harmless_prompts: Sequence[str], harmful_prompts: Sequence[str], cfg, *,
              judge: Optional[Callable[[str], bool]] = None, batch_size: int = 16,
              min_per_class: int = 1, progress: bool = True, seed: int = 0,
              extra_meta: Optional[dict] = None) -> Centers:
    """Per-step centers: mean phi_t over harmless prompts the model did NOT refuse and over
    harmful prompts it DID refuse (refusal decided by ``judge``, the keyword judge default)."""
    from ..sampling.api import generate_batched
    from .judge import is_refusal

    judge = judge or is_refusal
    kept = {}
    counts = {}
    for cls, prompts, want_refusal in (("harmless", harmless_prompts, False),
                                       ("harmful", harmful_prompts, True)):
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f"no {cls} prompts given for calibration")
        res = generate_batched(model, prompts, cfg, batch_size=batch_size,
                               return_activations=True, seed=seed, progress=progress,
                               desc=f"calibrate {cls}")
        refused = np.array([bool(judge(t)) for t in res.texts])
        sel = refused if want_refusal else ~refused
        kept[cls] = res.activations[sel]
        counts[cls] = {"total": len(prompts), "kept": int(sel.sum()),
                       "refused": int(refused.sum())}
    for cls, want in (("harmless", "not refused"), ("harmful", "refused")):
        n = counts[cls]["kept"]
        if n < min_per_class:
            raise ValueError(
                f"only {n} of {counts[cls]['total']} {cls} prompts were {want} "
                f"(need at least {min_per_class}); use more or different {cls} prompts, a "
                "model that refuses more (e.g. smollm2-135m-instruct-safe), or another judge")
    meta = run_meta(model, cfg)
    meta.update(counts=counts, prompt_sets={"harmless": prompts_hash(harmless_prompts),
                                            "harmful": prompts_hash(harmful_prompts)})
    meta.update(extra_meta or {})
    centers = centers_from_activations(kept["harmless"], kept["harmful"], meta)
    # Reference curves for plots: mean SRI of the kept calibration traces of each class.
    curves = {"harmless": sri_signal(kept["harmless"], centers, cfg.tau).mean(0).tolist(),
              "refusal": sri_signal(kept["harmful"], centers, cfg.tau).mean(0).tolist()}
    return Centers(centers.harmless, centers.harmful,
                   {**centers.meta, "reference_curves": curves})
