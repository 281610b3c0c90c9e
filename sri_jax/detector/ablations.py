"""Ablations of the SRI Guard's signal: the same one-class autoencoder on another signal.

* ``first_step``: phi_1, the step-1 pooled activation [D], standardised with the
  benign-train mean/std;
* ``text``: the per-step keyword refusal indicator [T] decoded from the response after each
  step;
* a layer: SRI from another layer (centers recalibrated on the calibration prompts, every set
  retraced).

Each gives ``{"per_attack": {attack: auroc}, "mean_auroc": float}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .autoencoder import SRIGuard
from .metrics import evaluate_scores


def auroc_ablation(fit_x, hold_x, test_x, attack_x: Mapping[str, np.ndarray], guard_kwargs
                   ) -> dict:
    """An :class:`SRIGuard` fitted on ``fit_x`` (threshold on ``hold_x``); AUROC of each
    attack set against ``test_x``."""
    g = SRIGuard(**guard_kwargs).fit(fit_x, holdout=hold_x)
    sb = g.score_samples(test_x)
    per = {a: evaluate_scores(sb, g.score_samples(x), g.threshold_)["auroc"]
           for a, x in attack_x.items()}
    return {"per_attack": per, "mean_auroc": float(np.mean(list(per.values())))}


def first_step_ablation(tr, ho, te, atk: Mapping, guard_kwargs) -> dict:
    """phi_1 of each traced set (``Traced.phi1``), standardised with the benign-train
    mean / std."""
    mu = tr.phi1.mean(0)
    sd = np.maximum(tr.phi1.std(0), 1e-6)

    def z(x):
        return (x - mu) / sd

    return auroc_ablation(z(tr.phi1), z(ho.phi1), z(te.phi1),
                          {a: z(t.phi1) for a, t in atk.items()}, guard_kwargs)


def text_ablation(tr, ho, te, atk: Mapping, guard_kwargs) -> dict:
    """The per-step keyword refusal indicator of each traced set (``Traced.keyword``)."""
    return auroc_ablation(tr.keyword, ho.keyword, te.keyword,
                          {a: t.keyword for a, t in atk.items()}, guard_kwargs)


def layer_centers(model, cfg, calibration, path: Path, *, judge, batch_size, progress, seed,
                  log):
    """Centers at ``cfg.layer``: loaded from ``path`` when a previous run saved them for this
    model and sampler, else calibrated and saved there."""
    from ..calibration import calibrate
    from ..sri.centers import check_compatible, load_centers, save_centers

    if (path / "centers.npz").is_file():
        c = load_centers(path)
        check_compatible(c, model, cfg)
        log(f"layer ablation: centers at layer {cfg.layer!r} loaded from {path}")
        return c
    log(f"layer ablation: recalibrating centers at layer {cfg.layer!r}")
    c = calibrate(model, calibration[0], calibration[1], cfg, judge=judge,
                  batch_size=batch_size, progress=progress, seed=seed)
    save_centers(c, path)
    return c



def layer_ablation(model, cfg, layer, calibration, root: Path, config, trace_sets) -> dict:
    """The guard's AUROC on SRI from ``layer``: centers recalibrated on ``calibration``
    (saved under ``root/centers``), every set retraced under ``root`` with
    ``trace_sets(cfg, centers, root, tag) -> {set name: Traced}``."""
    cfg_l = cfg.replace(layer=layer)
    c = config
    centers = layer_centers(model, cfg_l, calibration, root / "centers", judge=c.judge,
                            batch_size=c.batch_size, progress=c.progress, seed=c.seed,
                            log=c.say)
    tl = {name: t.sri for name, t in trace_sets(cfg_l, centers, root, f"{layer}:").items()}
    attacks = {name.split(":", 1)[1]: x for name, x in tl.items() if name.startswith("attack:")}
    return auroc_ablation(tl["benign_train"], tl["benign_holdout"], tl["benign_test"], attacks,
                          dict(c.guard_kwargs or {}))
