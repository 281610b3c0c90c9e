#!/usr/bin/env python
"""Refusal rate (keyword judge) of smollm2-135m-instruct-safe on the held-out AdvBench test
part of ``evaluation_splits`` (the prompts ``evaluate`` attacks): no attack, prefill
variants, the shipped universal GCG suffix. Optional names after N pick the rows.

    PYTHONPATH=$PWD .venv/bin/python scripts/attack_refusal.py 64
    PYTHONPATH=$PWD .venv/bin/python scripts/attack_refusal.py 64 gcg_universal
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sri_jax import load_model  # noqa: E402
from sri_jax.data.attacks import apply_attack, prefill_prefixes  # noqa: E402
from sri_jax.data.splits import evaluation_splits  # noqa: E402
from sri_jax.sampling.api import Prompting, generate_batched  # noqa: E402
from sri_jax.sampling.config import SamplerConfig  # noqa: E402
from sri_jax.judges.keyword import is_refusal  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
only = set(sys.argv[2:])
m = load_model("smollm2-135m-instruct-safe", dtype="float32")
m.safe_prompts = True
cfg = SamplerConfig.for_model(m)
raw = evaluation_splits(n_attack=n)["harmful"]["none"]
gcg = [a.text for a in apply_attack("gcg_universal", raw)]
rows = [("none", raw, {}), ("prefill_derived", raw, {"prefix": prefill_prefixes(raw)}),
        ("prefill_generic", raw, {"prefix": prefill_prefixes(raw, "generic")}),
        ("prefill_derived_5tok", raw, {"prefix": prefill_prefixes(raw), "prefix_tokens": 5}),
        ("gcg_universal", gcg, {})]
for name, prompts, kw in rows:
    if only and name not in only:
        continue
    t0 = time.time()
    r = generate_batched(m, prompts, cfg, batch_size=32, progress=False,
                         prompting=Prompting(**kw))
    ref = [is_refusal(t) for t in r.texts]
    print(name, json.dumps({"n": len(raw), "refusal_rate": sum(ref) / len(ref),
                            "seconds": round(time.time() - t0, 1)}), flush=True)
