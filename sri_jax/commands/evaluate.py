"""``sri-jax evaluate``: the SRI Guard evaluation on the offline prompt splits, written to a
folder (``report.json``, ``report.md``, ``guard/``, ``centers/``, ``traces/``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..data.splits import (N_CALIB_HARMFUL, N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN,
                           evaluation_splits)
from ..sri.judge import is_refusal


def check_own_outputs(out) -> None:
    """``out/centers`` and ``out/guard`` (written by ``evaluate`` and ``demo``) must be missing,
    empty or artifacts of those kinds, which a rerun reuses / replaces: checked up front."""
    from ..io import check_output

    check_output(Path(out) / "centers", "centers", overwrite=True)
    check_output(Path(out) / "guard", "detector", overwrite=True)


def centers_for(model, cfg, splits, centers_path, out, batch_size, progress, log,
                judge=is_refusal, allow_unverified=False):
    """The centers at ``centers_path``, else those an earlier run saved in ``out/centers``,
    else calibrated on the splits' calibration prompts and saved there."""
    from ..sri.centers import calibrate, check_compatible, load_centers, save_centers

    if centers_path and Path(centers_path).exists():
        log(f"centers loaded from {centers_path}")
        return load_centers(centers_path, allow_unverified=allow_unverified)
    if centers_path:
        raise FileNotFoundError(f"no centers at {centers_path}; omit --centers to calibrate")
    own = Path(out) / "centers"
    if (own / "centers.npz").is_file():  # a rerun resumes with the centers it saved
        centers = load_centers(own)
        check_compatible(centers, model, cfg)
        log(f"centers loaded from {own} (saved by an earlier run)")
        return centers
    centers = calibrate(model, splits["calib_harmless"], splits["calib_harmful"], cfg,
                        judge=judge, batch_size=batch_size, progress=progress)
    path = save_centers(centers, Path(out) / "centers")
    log(f"centers calibrated ({json.dumps(centers.meta['counts'])}), saved to {path}")
    return centers


def run_evaluation(model, cfg, out, *, centers_path=None, n_calib_harmless=N_CALIB_HARMLESS,
                   n_calib_harmful=N_CALIB_HARMFUL, n_train=N_GUARD_TRAIN,
                   n_holdout=N_GUARD_HOLDOUT, n_test=64, n_attack=64, attacks=(),
                   llama_guard=None, allow_unverified=False, config=None,
                   **options):
    """Splits, centers (loaded or calibrated), :func:`evaluate_guard` with ``config`` /
    ``options`` (:class:`EvalConfig` fields), then ``report.json``, ``report.md`` and the
    fitted guard (``guard/``) under ``out``. Every trace is written under ``out/traces``
    first: rerunning the same command resumes an interrupted evaluation instead of starting
    over: the centers it saved are reused and its own ``guard/`` is replaced (only folders of
    those kinds: anything else there is refused up front). Returns the
    :class:`sri_jax.detector.EvalReport`."""
    from ..detector.baselines import LlamaGuard3
    from ..detector.evaluate import EvalConfig, evaluate_guard

    out = Path(out)
    check_own_outputs(out)
    c = dataclasses.replace(config or EvalConfig(), **options)
    splits = evaluation_splits(n_calib_harmless=n_calib_harmless,
                               n_calib_harmful=n_calib_harmful, n_train=n_train,
                               n_holdout=n_holdout, n_test=n_test, n_attack=n_attack,
                               attacks=attacks, seed=c.seed)
    centers = centers_for(model, cfg, splits, centers_path, out, c.batch_size, c.progress,
                          c.log, judge=c.judge, allow_unverified=allow_unverified)
    ext = {"llama_guard": LlamaGuard3(llama_guard)} if llama_guard else None
    rep = evaluate_guard(model, centers, cfg, benign_train=splits["benign_train"],
                         benign_holdout=splits["benign_holdout"],
                         benign_test=splits["benign_test"], harmful=splits["harmful"],
                         calibration=(splits["calib_harmless"], splits["calib_harmful"]),
                         config=c, external_guards=ext, trace_dir=out / "traces")
    rep.save(out / "report.json")
    (out / "report.md").write_text(rep.table())
    rep.guard_.save(out / "guard", overwrite=True)
    c.log(rep.table())
    c.log(f"report: {out / 'report.json'}, {out / 'report.md'}; guard: {out / 'guard'}")
    return rep
