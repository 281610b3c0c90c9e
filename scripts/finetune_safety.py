#!/usr/bin/env python
"""Reproduce the shipped safety adapter of ``smollm2-135m-instruct-safe`` in one command:

    python scripts/finetune_safety.py                 # train -> runs/smollm2-135m-instruct-safe
    python scripts/finetune_safety.py --eval          # also evaluate base vs. tuned (slow)
    python scripts/finetune_safety.py --eval-only --out checkpoints/smollm2-135m-instruct-safe
                                                      # only evaluate the shipped adapter

Same as ``sri-jax finetune [--eval]``. Deterministic for a seed; interrupted runs resume
from ``--checkpoint-dir`` (default ``$SRI_JAX_CACHE/finetune/<name>``); the base model's
self-distilled answers are cached in ``$SRI_JAX_CACHE/finetune/distill.json``.
"""

from __future__ import annotations

import sys

from sri_jax.commands.finetune import main

if __name__ == "__main__":
    sys.exit(main())
