"""AR versus diffusion on the same lineage: smollm2-135m-instruct-safe (AR) and
smollm2-135m-diffusion (its Dream-style adaptation) on the same held-out prompts, keyword
judge and SRI recipe; prints the table and writes compare.json + ar_vs_diffusion.png
(sri_jax.comparison; `sri-jax demo` runs the same with 16 prompts per class).

    python scripts/compare_decoders.py [--out runs/compare_decoders] [--n-calib 32] [--n-test 32]
"""

import argparse
import json
import sys
from pathlib import Path

from sri_jax.comparison import (AR_MODEL, DIFFUSION_MODEL, CompareConfig, compare_decoders,
                                quick_eval)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ar", default=AR_MODEL)
    ap.add_argument("--diffusion", default=DIFFUSION_MODEL)
    ap.add_argument("--out", default="runs/compare_decoders")
    ap.add_argument("--n-calib", type=int, default=32)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--attacks", default="", help="comma-separated fixed jailbreak transforms "
                    "to add as sets (e.g. refusal_suppression,flip_attack,gcg_suffix,"
                    "random_search); prefilling is always run")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--quick", type=int, metavar="N", help="only the cheap check: greedy "
                    "answers of both models to N held-out benign and harmful prompts, refusal "
                    "rates and answer perplexity (writes OUT/quick_eval.json)")
    a = ap.parse_args(argv)
    if min(a.n_calib, a.n_test, a.batch_size) < 1 or (a.quick is not None and a.quick < 1):
        ap.error("--n-calib, --n-test, --batch-size and --quick must be >= 1")
    from sri_jax.data.attacks import ATTACKS

    attacks = tuple(x for x in a.attacks.split(",") if x)
    unknown = [x for x in attacks if x not in ATTACKS or x in ("prefill", "infill")]
    if unknown:
        ap.error(f"--attacks: unknown or not a prompt transform: {', '.join(unknown)}; "
                 f"choose from {', '.join(k for k in ATTACKS if k not in ('prefill', 'infill'))}")
    try:
        if a.quick:
            res = quick_eval(a.diffusion, a.ar, n=a.quick, progress=not a.no_progress)
            Path(a.out).mkdir(parents=True, exist_ok=True)
            (Path(a.out) / "quick_eval.json").write_text(json.dumps(res, indent=1) + "\n")
            return 0
        compare_decoders(a.ar, a.diffusion, out_dir=a.out, config=CompareConfig(
            n_calib=a.n_calib, n_test=a.n_test, batch_size=a.batch_size,
            progress=not a.no_progress, attacks=attacks))
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"compare_decoders: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
