#!/usr/bin/env python
"""Where one diffusion step's time goes on this machine, part by part.

The workload of ``bench_sampler.py``'s diffusion row (SmolLM2-135M shape, random fp32
weights, batch 8, prompt 48 + canvas 128 = 176 tokens, LM head over the 128-token block),
one forward pass = one sampler step, split into:

* ``gemms``      the seven projections of every layer (q, k, v, o, gate, up, down) x layers
* ``attention``  ``decoder.attention`` x layers, and the same for the previous layout (one
                 5-d einsum over [B, L, K, G, hd]: the A/B behind commit 02f9999)
* ``lm_head``    the tied LM head over the block
* ``forward``    the whole forward, current vs previous attention layout (logits compared)
* ``rest``       forward - gemms - attention - lm_head (norms, RoPE, SwiGLU, softmax)

Each part is jitted, warmed up once, then timed ``--repeats`` times with the variants
interleaved; medians are reported with the GFLOP/s they reach, next to a 2048^3 fp32 matmul
under XLA timed inside every group (its median over all groups is the peak).

    .venv/bin/python scripts/bench_diffusion_step.py        # ~3 min on 2 cores
    XLA_FLAGS=--xla_cpu_use_onednn=true .venv/bin/python scripts/bench_diffusion_step.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampler import (FULL, REPO, cores, cpu_model, forward_flops, repo_command,  # noqa: E402
                           write_json)

DEFAULT_OUT = REPO / "docs" / "benchmarks" / "diffusion_step.json"


def einsum5d_attention(q, k, v, allowed):
    """The previous layout of ``decoder.attention`` (same math), kept as the A/B baseline."""
    import jax
    import jax.numpy as jnp
    from sri_jax.models.decoder import NEG_INF

    b, l, h, hd = q.shape
    kh = k.shape[2]
    q = q.reshape(b, l, kh, h // kh, hd)
    scores = jnp.einsum("blkgd,bskd->bkgls", q, k,
                        preferred_element_type=jnp.float32) * (hd ** -0.5)
    scores = jnp.where(allowed[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgls,bskd->blkgd", probs, v).reshape(b, l, h * hd)


def timed(fns: dict, args: dict, repeats: int) -> dict:
    """Warm each jitted fn once, then time them interleaved (order alternating)."""
    names = list(fns)
    outs = {n: fns[n](*args[n]) for n in names}
    for o in outs.values():
        o.block_until_ready()
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n](*args[n]).block_until_ready()
            times[n].append(time.perf_counter() - t0)
    return {n: {"times_s": times[n], "median_s": float(np.median(times[n])),
                "out": outs[n]} for n in names}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from sri_jax.models import decoder as D
    from sri_jax.models.config import ModelConfig

    sz = FULL
    cfg = ModelConfig(family="llada", vocab_size=sz["vocab"], hidden_size=sz["hidden"],
                      intermediate_size=sz["intermediate"], num_layers=sz["layers"],
                      num_heads=sz["heads"], num_kv_heads=sz["kv_heads"],
                      head_dim=sz["hidden"] // sz["heads"], rope_theta=sz["rope_theta"],
                      causal=False, tie_word_embeddings=True, mask_token_id=sz["vocab"] - 1)
    params = D.random_params(cfg)
    b, p_len, block = args.batch, sz["prompt_len"], sz["dif_block"]
    s = p_len + sz["dif_gen"]
    n, d, hd = cfg.num_layers, cfg.hidden_size, cfg.head_dim
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, sz["vocab"] - 2, (b, s)), jnp.int32)
    x = jnp.asarray(rng.standard_normal((b, s, d)), jnp.float32)
    q = jnp.asarray(rng.standard_normal((b, s, cfg.num_heads, hd)), jnp.float32)
    kv = [jnp.asarray(rng.standard_normal((b, s, cfg.num_kv_heads, hd)), jnp.float32)
          for _ in range(2)]
    allowed = jnp.ones((b, s, s), bool)
    layer = jax.tree.map(lambda a: a[0], params["layers"])

    def gemms(p, x):  # one layer's seven projections, on the layer's own shapes
        qo = D._mm(x, p["wq"])
        k, v = D._mm(x, p["wk"]), D._mm(x, p["wv"])
        o = D._mm(qo, p["wo"])
        h = D._mm(x, p["w_gate"]) + D._mm(x, p["w_up"])
        return o.sum() + k.sum() + v.sum() + D._mm(h, p["w_down"]).sum()

    def forward_with(attn):
        def f(params, ids):
            saved, D.attention = D.attention, attn
            try:  # patched while tracing only: the compiled program keeps this layout
                return D.forward(params, cfg, ids, logits_start=p_len).logits
            finally:
                D.attention = saved
        return jax.jit(f)

    mm_n = sz["matmul_n"]
    a2 = jnp.asarray(rng.standard_normal((mm_n, mm_n)), jnp.float32)
    print(f"diffusion step parts: batch {b}, {s} tokens, {n} layers, LM head over {block}; "
          f"{args.repeats} interleaved repeats", flush=True)
    groups = [
        {"attention": (jax.jit(D.attention), (q, *kv, allowed)),
         "attention_einsum5d": (jax.jit(einsum5d_attention), (q, *kv, allowed))},
        {"gemms": (jax.jit(gemms), (layer, x)),
         "lm_head": (jax.jit(lambda p, h: D.lm_head(p, cfg, h)), (params, x[:, p_len:]))},
        {"forward": (forward_with(D.attention), (params, ids)),
         "forward_einsum5d": (forward_with(einsum5d_attention), (params, ids))},
    ]
    matmul = jax.jit(lambda a: a @ a)
    res, mm_times = {}, []
    for group in groups:  # the matmul peak is timed inside every group (drift hits it alike)
        group = {**group, "matmul": (matmul, (a2,))}
        out = timed({k: v[0] for k, v in group.items()}, {k: v[1] for k, v in group.items()},
                    args.repeats)
        mm_times += out.pop("matmul")["times_s"]
        res |= out
    res["matmul"] = {"times_s": mm_times, "median_s": float(np.median(mm_times))}

    fl = forward_flops(sz, s, block)
    attn_fl = fl["attention"] // n
    flops = {"matmul": 2.0 * mm_n ** 3, "gemms": fl["matmul"] // n, "attention": attn_fl,
             "attention_einsum5d": attn_fl, "lm_head": fl["lm_head"],
             "forward": fl["total"], "forward_einsum5d": fl["total"]}
    per_step = {"gemms": n, "attention": n, "attention_einsum5d": n, "lm_head": 1,
                "forward": 1, "forward_einsum5d": 1}
    logits_diff = float(jnp.max(jnp.abs(res["forward"]["out"] - res["forward_einsum5d"]["out"])))
    attn_diff = float(jnp.max(jnp.abs(res["attention"]["out"]
                                      - res["attention_einsum5d"]["out"])))
    parts = {}
    for name, v in res.items():
        parts[name] = {"times_s": v["times_s"], "median_s": v["median_s"],
                       "gflops_per_s": flops[name] * (b if name != "matmul" else 1)
                       / v["median_s"] / 1e9}
        if name in per_step:
            parts[name]["per_step_s"] = v["median_s"] * per_step[name]
    rest = parts["forward"]["per_step_s"] - sum(parts[k]["per_step_s"]
                                                for k in ("gemms", "attention", "lm_head"))
    doc = {"machine": {"cpu": cpu_model(), "cores": cores(), "jax": jax.__version__,
                       "xla_flags": os.environ.get("XLA_FLAGS", "")},
           "command": repo_command(),
           "batch": b, "tokens": s, "layers": n, "lm_head_tokens": block,
           "repeats": args.repeats, "parts": parts, "rest_per_step_s": rest,
           "max_abs_diff": {"attention": attn_diff, "logits": logits_diff}}
    write_json(doc, args.out)

    peak = parts["matmul"]["gflops_per_s"]
    print(f"{'part':<22} {'median ms':>10} {'per step s':>11} {'GFLOP/s':>9} {'% of peak':>9}")
    for name, v in parts.items():
        step = f"{v['per_step_s']:.3f}" if "per_step_s" in v else ""
        print(f"{name:<22} {1e3 * v['median_s']:>10.2f} {step:>11} {v['gflops_per_s']:>9.1f} "
              f"{100 * v['gflops_per_s'] / peak:>8.1f}%")
    print(f"{'rest (by difference)':<22} {'':>10} {rest:>11.3f}")
    print(f"attention layouts: max |diff| {attn_diff:.2e}; forward logits max |diff| "
          f"{logits_diff:.2e}")
    print(f"forward, current vs previous attention layout: "
          f"{parts['forward_einsum5d']['median_s'] / parts['forward']['median_s']:.3f}x")
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
