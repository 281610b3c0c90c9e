"""``sri-jax adapt-diffusion``: adapt an AR model into a masked-diffusion LM (the recipe of
smollm2-135m-diffusion, :mod:`sri_jax.diffusion_adapt`; docs/diffusion.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..diffusion_adapt import (ARTIFACT_KIND, DEFAULT_BASE, DEFAULT_OUT, SHIPPED_DIR,
                               AdaptConfig, adapt, build_adapt_data, save_artifact,
                               splits_hash)
from ..finetune import check_checkpoint_dir
from .args import (POSITIVE, UsageError, finite_float, training_config, training_flags,
                   training_run_flags)

HELP = ("adapt an AR model into a masked-diffusion LM (the recipe of smollm2-135m-diffusion; "
        "docs/diffusion.md)")


def add_arguments(p) -> None:
    """Options of ``sri-jax adapt-diffusion``."""
    d = AdaptConfig()
    training_run_flags(p, base=DEFAULT_BASE, out=DEFAULT_OUT, help={
        "base": f"AR model to adapt, also the teacher of the self-distilled data (default "
                f"{DEFAULT_BASE})",
        "out": f"adapter folder (default {DEFAULT_OUT}; the shipped one is {SHIPPED_DIR})",
        "checkpoint-dir": "resumable checkpoints (default "
                          "$SRI_JAX_CACHE/adapt-diffusion/<out name>)",
        "no-resume": "start over (with --overwrite when checkpoints exist)",
        "overwrite": "replace the adapter in --out (each chunk of a chunked run writes it), "
                     "and with --no-resume the checkpoints"})
    training_flags(p, d.train, alpha=finite_float(0, lo_open=True))
    p.add_argument("--max-length", type=POSITIVE, default=d.train.max_length,
                   help="prompt + response tokens (prompts cut on the left)")
    p.add_argument("--gen-length", type=POSITIVE, default=d.gen_length,
                   help="response canvas in tokens (the sampler's gen_length)")
    p.add_argument("--mask-id", type=int, default=d.mask_token_id)
    p.add_argument("--max-minutes", type=finite_float(0, lo_open=True), help="stop after this "
                   "much wall time with a checkpoint; rerun the command to continue")
    p.add_argument("--stop-after", type=POSITIVE, help="stop after this many steps in total")
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args) -> AdaptConfig:
    d = AdaptConfig()
    if args.max_length < args.gen_length + 8:
        raise UsageError(f"--max-length {args.max_length} leaves no room for a prompt next to "
                         f"--gen-length {args.gen_length}; raise it")
    train = dataclasses.replace(training_config(args, d.train), max_response=args.gen_length,
                                max_length=args.max_length)
    return AdaptConfig(train=train, eps=d.eps, mask_token_id=args.mask_id)


def run(args, log=print) -> int:
    from ..weights.loader import load_model

    from ..artifacts import check_output
    from ..fetch import cache_dir

    acfg = config_from_args(args)
    out = Path(args.out)
    ddir = cache_dir() / "adapt-diffusion"
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else ddir / out.name
    check_output(out, ARTIFACT_KIND, overwrite=args.overwrite)   # before any compute
    check_checkpoint_dir(ckpt, resume=not args.no_resume, overwrite=args.overwrite)
    teacher = load_model(args.base, dtype="float32")
    progress = not args.no_progress
    data = build_adapt_data(teacher, seed=args.seed, gen_length=acfg.gen_length,
                            cache_file=ddir / "distill.json", progress=progress, log=log)
    counts = data.counts()
    log(f"{len(data.examples)} examples: {counts}")
    res = adapt(teacher, data.examples, acfg, checkpoint_dir=ckpt, resume=not args.no_resume,
                overwrite=args.overwrite, stop_after=args.stop_after,
                max_minutes=args.max_minutes, progress=progress, log=log)
    meta = {"examples": counts, "splits": data.splits, "splits_hash": splits_hash(data.splits),
            "steps": res.steps, "total_steps": res.total, "complete": res.steps == res.total,
            "loss_curve": [round(x, 4) for x in res.losses],
            "command": "sri-jax adapt-diffusion " + " ".join(getattr(args, "argv", []))}
    save_artifact(out, res.adapter, acfg, base_model=teacher.name,
                  base_weight_hash=teacher.weight_hash, metadata=meta, overwrite=args.overwrite)
    log(f"diffusion adapter written to {out} (step {res.steps}/{res.total}"
        f"{'' if res.steps == res.total else '; rerun the command to continue'})")
    return 0


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Adapt an AR model into a masked-diffusion LM")
    add_arguments(ap)
    return run(ap.parse_args(argv))
