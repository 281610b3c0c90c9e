#!/usr/bin/env python
"""Run GCG in universal mode against a model on training-split harmful prompts, within a
time budget, and print the suffix with its provenance (the record shipped as
``sri_jax.data.attacks.GCG_UNIVERSAL``).

Prompts: the AdvBench calibration part of ``evaluation_splits`` (never the held-out test
part the evaluation attacks), first ``--prompts`` of them; targets: ``default_target``
("Sure, here is how to ..."; the offline AdvBench has no targets). Resumable: rerun with the
same --out to continue.

    PYTHONPATH=$PWD .venv/bin/python scripts/gcg_universal.py --out gcg_universal_run \\
        --prompts 4 --candidates 64 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct-safe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--suffix-length", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=256)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--eval-chunk", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from sri_jax import load_model
    from sri_jax.data import load_prompt_set, split
    from sri_jax.data.attacks import default_target
    from sri_jax.data.splits import evaluation_splits
    from sri_jax.gcg import GCGConfig, run_gcg

    sp = evaluation_splits()
    held_out = set(sp["ids"]["harmful"])
    adv = load_prompt_set("advbench")
    a = split(adv, sizes={"test": len(held_out), "calib": len(adv) - len(held_out)}, seed=0)
    calib = a["calib"]
    assert not held_out & set(calib.ids)
    prompts, ids = list(calib.prompts[:args.prompts]), list(calib.ids[:args.prompts])
    model = load_model(args.model, dtype="float32")
    model.safe_prompts = True
    cfg = GCGConfig(suffix_length=args.suffix_length, top_k=args.top_k,
                    num_candidates=args.candidates, eval_chunk=args.eval_chunk,
                    steps=args.steps, seed=args.seed, checkpoint_every=1)
    res = run_gcg(model, prompts, [default_target(p) for p in prompts], cfg, out_dir=args.out,
                  prompt_ids=ids, max_seconds=args.minutes * 60)
    print(json.dumps({"suffix": res.best_suffix, "suffix_ids": res.best_ids,
                      "model": model.name, "weight_hash": model.weight_hash,
                      "prompt_ids": ids, "steps": len(res.history),
                      "initial_loss": res.initial_loss, "loss": res.best_loss,
                      "config": {k: getattr(cfg, k) for k in ("suffix_length", "top_k",
                                                              "num_candidates", "seed")}},
                     indent=1))


if __name__ == "__main__":
    main()
