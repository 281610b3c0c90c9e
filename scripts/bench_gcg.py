#!/usr/bin/env python
"""Time one GCG step (sri_jax.gcg.gcg_step) on a real model and write the FLOPs it costs.

One step = value-and-grad of the target loss w.r.t. the one-hot suffix over P prompt rows
+ the top-k + B candidate forwards (B x P rows, eval_chunk candidates per pass). The step
is compiled and run once untimed, then timed ``--repeats`` times (median). FLOPs are
counted analytically (multiply-add = 2), per row of L tokens whose LM head covers the W+1
target positions:

    forward(row) = 2 L P_blocks + 4 L^2 H hd n_layers + 2 (W + 1) D V
    step         = B P forward(row) + 3 P forward(row) + 3 * 2 S V D   (grad ~ 3 forwards)

and the same formula is evaluated for Llama-3.1-8B at the same token counts (the scaling
written in docs/attacks.md). Prints one table and writes JSON.

    python scripts/bench_gcg.py                       # smollm2-135m-instruct-safe, B 512
    python scripts/bench_gcg.py --candidates 128 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LLAMA3_8B = dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8,
                 head_dim=128, vocab=128256)


def sizes(mcfg) -> dict:
    return dict(hidden=mcfg.hidden_size, intermediate=mcfg.intermediate_size,
                layers=mcfg.num_layers, heads=mcfg.num_heads, kv_heads=mcfg.num_kv_heads,
                head_dim=mcfg.head_dim, vocab=mcfg.vocab_size)


def row_flops(sz: dict, length: int, w: int) -> float:
    d, f, n, v = sz["hidden"], sz["intermediate"], sz["layers"], sz["vocab"]
    q, kv = sz["heads"] * sz["head_dim"], sz["kv_heads"] * sz["head_dim"]
    block_params = n * (d * q + 2 * d * kv + q * d + 3 * d * f)
    return 2 * length * block_params + 4 * length ** 2 * q * n + 2 * (w + 1) * d * v


def step_flops(sz: dict, length: int, w: int, s: int, prompts: int, cands: int) -> float:
    f = row_flops(sz, length, w)
    return cands * prompts * f + 3 * prompts * f + 3 * 2 * s * sz["vocab"] * sz["hidden"]


def step_memory(compiled) -> dict:
    """XLA's own accounting of the compiled step, in GiB: the buffers it takes (weights and
    problem), the temporaries it allocates while running (activations, gradients, candidate
    logits), and what it returns. Empty where the backend does not report it."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    names = {"argument_size_in_bytes": "arguments_gib", "temp_size_in_bytes": "temporaries_gib",
             "output_size_in_bytes": "outputs_gib", "alias_size_in_bytes": "aliased_gib"}
    return {v: getattr(m, k) / 2 ** 30 for k, v in names.items() if hasattr(m, k)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct-safe")
    ap.add_argument("--prompts", type=int, default=1, help="prompts in the universal loss")
    ap.add_argument("--suffix-length", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=256)
    ap.add_argument("--candidates", type=int, default=512)
    ap.add_argument("--eval-chunk", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "gcg_step.json"))
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from sri_jax import load_model
    from sri_jax.data import load_prompt_set
    from sri_jax.data.attacks import default_target
    from sri_jax.gcg import GCGConfig, allowed_tokens, build_problem, gcg_step, initial_suffix

    model = load_model(args.model, dtype="float32")
    prompts = list(load_prompt_set("advbench").prompts[:args.prompts])
    targets = [default_target(p) for p in prompts]
    cfg = GCGConfig(suffix_length=args.suffix_length, top_k=args.top_k,
                    num_candidates=args.candidates, eval_chunk=args.eval_chunk)
    prob = build_problem(model, prompts, targets, cfg.suffix_length)
    allowed = allowed_tokens(model)
    suffix = jnp.asarray(initial_suffix(model, cfg, allowed), jnp.int32)
    allowed_dev = jnp.asarray(allowed)
    static = dict(mcfg=model.config, top_k=cfg.top_k, num_candidates=cfg.num_candidates,
                  chunk=cfg.eval_chunk)
    args_of = lambda i: (model.params, prob, suffix, allowed_dev, jax.random.key(i))  # noqa: E731
    t0 = time.perf_counter()
    compiled = gcg_step.lower(*args_of(0), **static).compile()
    compile_s = time.perf_counter() - t0
    memory = step_memory(compiled)
    run = lambda i: jax.block_until_ready(compiled(*args_of(i)))  # noqa: E731
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    run(0)
    first = time.perf_counter() - t0
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        run(i + 1)
        times.append(time.perf_counter() - t0)
    load1 = os.getloadavg()
    import resource

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    step = float(statistics.median(times))
    length, w = prob.ids.shape[1], prob.labels.shape[1]
    fl = step_flops(sizes(model.config), length, w, cfg.suffix_length, args.prompts,
                    cfg.num_candidates)
    fl8 = step_flops(LLAMA3_8B, length, w, cfg.suffix_length, args.prompts, cfg.num_candidates)
    res = {"model": model.name, "weight_hash": model.weight_hash, "backend": jax.default_backend(),
           "cpu_cores": len(os.sched_getaffinity(0)), "loadavg_before": load0,
           "loadavg_after": load1, "prompts": args.prompts, "row_tokens": int(length),
           "target_tokens": int(w), "allowed_tokens": int(allowed.sum()),
           "config": {k: getattr(cfg, k) for k in ("suffix_length", "top_k", "num_candidates",
                                                 "eval_chunk")},
           "peak_rss_gib": peak_rss, "step_memory": memory, "compile_s": compile_s,
           "first_call_s": first, "step_s": step,
           "step_times_s": times,
           "candidates_per_s": cfg.num_candidates * args.prompts / step,
           "step_gflop": fl / 1e9, "achieved_gflops": fl / step / 1e9,
           "llama3_8b_step_tflop": fl8 / 1e12,
           "llama3_8b_step_s_at_400_tflops": fl8 / 400e12}
    print(f"{'model':32s} {res['model']}\n{'backend, cores':32s} {res['backend']}, "
          f"{res['cpu_cores']} (load avg {load0[0]:.1f} -> {load1[0]:.1f})")
    for k in ("row_tokens", "target_tokens", "allowed_tokens", "peak_rss_gib", "compile_s",
              "first_call_s",
              "step_s",
              "candidates_per_s", "step_gflop", "achieved_gflops", "llama3_8b_step_tflop",
              "llama3_8b_step_s_at_400_tflops"):
        v = res[k]
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    for k, v in memory.items():
        print(f"{'step ' + k:32s} {v:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
