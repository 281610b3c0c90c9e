"""``sri-jax train-detector``: fit the SRI Guard on benign traces and save it."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ..data.splits import N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN, benign_splits
from ..judges.keyword import is_refusal
from . import args as A
from .evaluate import SplitSizes

HELP = "fit the SRI Guard on benign traces and save it"


def add_arguments(p) -> None:
    A.model_flags(p)
    A.sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`/`demo`")
    p.add_argument("--n-calib-harmless", type=A.NON_NEGATIVE, default=N_CALIB_HARMLESS,
                   help="benign prompts reserved for calibration (skipped; as in demo)")
    p.add_argument("--n-train", type=A.POSITIVE, default=N_GUARD_TRAIN,
                   help="benign training traces")
    p.add_argument("--n-holdout", type=A.POSITIVE, default=N_GUARD_HOLDOUT,
                   help="benign threshold traces")
    p.add_argument("--epochs", type=A.POSITIVE, default=200, help="autoencoder training epochs")
    p.add_argument("--quantile", type=A.finite_float(0, 1, lo_open=True, hi_open=True),
                   default=0.99, help="threshold quantile")
    p.add_argument("--out", required=True, help="folder to write the guard to (orbax; new or "
                                                "empty, see --overwrite)")
    A.overwrite_flag(p, "detector")
    A.trust_flag(p)


def run(args) -> int:
    from ..artifacts import check_output
    from ..sri.centers import load_centers
    from ..tracing import TraceOptions

    check_output(args.out, "detector", overwrite=args.overwrite)  # before the model loads
    centers = load_centers(args.centers, allow_unverified=args.trust_centers)
    model = A.load(args)
    cfg = A.sampler(args, model)
    train_detector(model, cfg, args.out, centers=centers, overwrite=args.overwrite,
                   sizes=SplitSizes(n_calib_harmless=args.n_calib_harmless,
                                    n_train=args.n_train, n_holdout=args.n_holdout),
                   options=TraceOptions(batch_size=args.batch_size, seed=args.seed,
                                        progress=not args.no_progress),
                   guard_kwargs={"epochs": args.epochs, "quantile": args.quantile})
    return 0


def train_detector(model, cfg, out, *, centers, sizes: SplitSizes = SplitSizes(),
                   options=None, guard_kwargs=None, overwrite=False, log=print):
    """Trace the benign train/holdout prompts of the splits ``sizes`` (their benign calib |
    train | holdout cut) with ``centers`` and ``options`` (batch size 32 by default; its seed
    also cuts the splits), fit, save to ``out`` (a new or empty folder, or over another
    detector with ``overwrite``; checked before any tracing). Returns the fitted
    ``SRIGuard``."""
    from ..artifacts import check_output
    from ..detector.autoencoder import SRIGuard
    from ..detector.protocol import trace_set
    from ..tracing import TraceOptions

    check_output(out, "detector", overwrite=overwrite)
    options = options or TraceOptions(batch_size=32)
    _, b = benign_splits(n_calib=sizes.n_calib_harmless, n_train=sizes.n_train,
                         n_holdout=sizes.n_holdout, seed=options.seed)
    with tempfile.TemporaryDirectory(prefix="sri_jax_guard_") as traces:
        tr, ho = [trace_set(model, b[k].prompts, cfg, centers,
                            out_dir=Path(traces) / f"benign_{k}", judge=is_refusal,
                            step_judge=is_refusal,
                            options=dataclasses.replace(options, set_name=f"benign_{k}"))
                  for k in ("train", "holdout")]
    guard = SRIGuard(**(guard_kwargs or {})).fit(tr.sri, holdout=ho.sri, centers_meta=centers)
    path = guard.save(out, overwrite=overwrite)
    log(f"SRIGuard ({guard.num_params()} params, threshold {guard.threshold_:.4g}) saved to "
        f"{path}")
    return guard
