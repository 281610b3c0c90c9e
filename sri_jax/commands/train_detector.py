"""``sri-jax train-detector``: fit the SRI Guard on benign traces and save it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..data.splits import N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN, benign_splits
from ..sri.judge import is_refusal


def train_detector(model, cfg, out, *, centers_path=None, centers=None,
                   n_calib_harmless=N_CALIB_HARMLESS, n_train=N_GUARD_TRAIN,
                   n_holdout=N_GUARD_HOLDOUT, batch_size=32, guard_kwargs=None, progress=True,
                   seed=0, overwrite=False, allow_unverified=False, log=print):
    """Trace benign train/holdout with the centers (a Centers object, or loaded from
    ``centers_path``), fit, save to ``out`` (a new or empty folder, or over another detector
    with ``overwrite``; checked before any tracing). Returns the fitted ``SRIGuard``."""
    from ..detector.autoencoder import SRIGuard
    from ..detector.protocol import trace_set
    from ..io import check_output
    from ..sri.centers import load_centers

    check_output(out, "detector", overwrite=overwrite)
    if centers is None:
        centers = load_centers(centers_path, allow_unverified=allow_unverified)
    _, b = benign_splits(n_calib=n_calib_harmless, n_train=n_train, n_holdout=n_holdout,
                         seed=seed)
    kw = dict(batch_size=batch_size, judge=is_refusal, step_judge=is_refusal,
              progress=progress, seed=seed)
    with tempfile.TemporaryDirectory(prefix="sri_jax_guard_") as traces:
        tr = trace_set(model, b["train"].prompts, cfg, centers,
                       out_dir=Path(traces) / "benign_train", desc="benign_train", **kw)
        ho = trace_set(model, b["holdout"].prompts, cfg, centers,
                       out_dir=Path(traces) / "benign_holdout", desc="benign_holdout", **kw)
    guard = SRIGuard(**(guard_kwargs or {})).fit(tr.sri, holdout=ho.sri, centers_meta=centers)
    path = guard.save(out, overwrite=overwrite)
    log(f"SRIGuard ({guard.num_params()} params, threshold {guard.threshold_:.4g}) saved to "
        f"{path}")
    return guard
