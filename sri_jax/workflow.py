"""The SRI workflow end to end: default sampler per model kind, summaries, figures, the demo."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .data.splits import (DEMO_ATTACKS, EVAL_ATTACKS, N_CALIB_HARMFUL,  # noqa: F401
                          N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN, N_TEST,
                          evaluation_splits)
from .sampling.config import SamplerConfig
from .weights.loader import resolve_dtype  # noqa: F401 - the CLI's "auto" dtype
from .sri.signal import internal_recovery_rate

LAMBDA_R = (0.5, 0.3, 0.1)
DEMO_MODEL = "smollm2-135m-instruct-safe"


# What each sampler ignores (sri_jax.sampling): the AR sampler decodes one token per step;
# LLaDA's diffusion step draws from all logits; Dream picks positions with dream_alg and has
# no guidance; ar_on_diffusion commits one token per step, left to right.
_AR_IGNORES = ("steps", "block_length", "remasking", "cfg_scale", "cfg_pool", "pooling")
_WHY = {
    "ar": "an autoregressive model (one token per step, T = gen_length; no blocks, "
          "remasking, guidance or pooling choice)",
    "ar_mode": "a diffusion model (use mode diffusion or ar_on_diffusion)",
    "top": "a diffusion model whose sampler draws from the full distribution (no top-p/top-k)",
    "dream": "a Dream model (dream_alg picks the positions; no remasking or guidance)",
    "ar_on_diffusion": "ar_on_diffusion commits one token per step (no block length or "
                       "remasking)",
}


def inapplicable_sampler_options(model, options) -> tuple[list[str], str]:
    """The given (not None) sampler options that ``model``'s sampler would ignore, and why:
    ``(names, reason)``; ``([], "")`` when every option applies."""
    given = [k for k, v in options.items() if v is not None]
    mode = options.get("mode")
    if model.config.causal:
        bad = [k for k in given if k in _AR_IGNORES or (k == "mode" and mode != "autoregressive")]
        return bad, _WHY["ar"] if bad else ""
    if mode == "autoregressive":
        return ["mode"], _WHY["ar_mode"]
    rules = [(("remasking", "cfg_scale", "cfg_pool"), "dream") if model.config.logits_shift
             else (("top_p", "top_k"), "top")]
    if mode == "ar_on_diffusion":
        rules.append((("block_length", "remasking"), "ar_on_diffusion"))
    bad, why = [], []
    for keys, reason in rules:
        hit = [k for k in given if k in keys and k not in bad]
        if hit:
            bad += hit
            why.append(_WHY[reason])
    return bad, "; ".join(why)


def default_sampler(model, **overrides) -> SamplerConfig:
    """The paper's defaults: 32 greedy tokens for AR models; gen 128, 32 steps, one block,
    greedy, low-confidence remasking for diffusion models (``ar_on_diffusion``: one step per
    token). An option the model's sampler would ignore is a ValueError."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad, why = inapplicable_sampler_options(model, overrides)
    if bad:
        raise ValueError(f"{', '.join(bad)}: not used for {model.name or 'this model'}, {why}; "
                         "leave them out")
    if model.config.causal:
        overrides.pop("mode", None)
        return SamplerConfig.autoregressive(gen_length=overrides.pop("gen_length", 32),
                                            **overrides)
    base = dict(steps=32, gen_length=128, block_length=128)
    base.update(overrides)
    if "block_length" not in overrides:
        base["block_length"] = base["gen_length"]
    if base.get("mode") == "ar_on_diffusion" and "steps" not in overrides:
        base["steps"] = base["gen_length"]
    return SamplerConfig(**base)


def summarize(groups: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict]:
    """One row per group: n, planned (records the runs' plans hold; None when unknown),
    partial (some run not complete), refusal rate, IRR at each lambda_r, mean and final
    sigma."""
    rows = []
    for name, g in groups.items():
        sri, refused = np.asarray(g["sri"]), np.asarray(g["refused"], bool)
        row = {"group": name, "n": int(len(sri)), "planned": g.get("planned", int(len(sri))),
               "partial": bool(g.get("partial", False)),
               "refusal_rate": float(refused.mean()),
               "mean_sigma": float(sri.mean()), "final_sigma": float(sri[:, -1].mean())}
        for lam in LAMBDA_R:
            row[f"irr@{lam}"] = internal_recovery_rate(sri, 0.5, lam)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    cols = ["group", "n", "refusal_rate"] + [f"irr@{lam}" for lam in LAMBDA_R] + [
        "mean_sigma", "final_sigma"]
    head = ["set / attack", "n", "refusal", "IRR@.5", "IRR@.3", "IRR@.1", "mean sigma",
            "final sigma"]
    body = [[r["group"] + (" [partial]" if r.get("partial") else ""),
             f"{r['n']}/{r.get('planned') or '?'}" if r.get("partial") else str(r["n"])]
            + [f"{r[c]:.3f}" for c in cols[2:]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def make_figures(groups: Mapping[str, Mapping[str, np.ndarray]], out_dir, *,
                 centers=None) -> list[Path]:
    """signal.png, overlays.png, irr.png, refusal_rate.png, lda.png under ``out_dir``."""
    from .sri import plots

    out = Path(out_dir)
    sri = {k: np.asarray(v["sri"]) for k, v in groups.items()}
    curves = (dict(centers.meta).get("reference_curves") or {}) if centers is not None else {}
    ref = {k: (np.asarray(curves[k]) if k in curves else None) for k in ("harmless", "refusal")}
    paths = [
        plots.plot_signal(sri, out / "signal.png", harmless_ref=ref["harmless"],
                          refusal_ref=ref["refusal"]),
        plots.plot_overlays(sri, out / "overlays.png"),
        plots.plot_irr({r["group"]: {lam: r[f"irr@{lam}"] for lam in LAMBDA_R}
                        for r in summarize(groups)}, out / "irr.png"),
        plots.plot_rates({k: float(np.mean(v["refused"])) for k, v in groups.items()},
                         out / "refusal_rate.png"),
    ]
    steps = sorted({v.shape[1] for v in sri.values()})
    if len(steps) > 1:
        warnings.warn(f"lda.png skipped: the groups have different generation lengths "
                      f"(T = {', '.join(map(str, steps))}); plot one length at a time for it",
                      stacklevel=2)
    elif len(sri) >= 2:
        paths.append(plots.plot_lda(sri, out / "lda.png"))
    return paths


def groups_from_traces(trace_dirs: Sequence) -> dict:
    """Read trace directories into {"set/attack": {"sri", "refused", "planned", "partial"}}
    groups, warning (``warnings.warn``) about what would otherwise skew the numbers silently:

    * a folder given more than once (same resolved path) is read once;
    * a run that is not complete (killed or still running: no manifest, or fewer records
      than its manifest) is read, its group marked ``partial``; ``planned`` is the records
      the runs' plans hold (None when a plan predates record counts);
    * runs of different generation lengths form separate groups, ``"name [T=...]"``.
    """
    from .parallel.storage import is_url
    from .tracing import read_traces, run_status

    seen: dict = {}
    groups: dict = {}  # (name, T) -> lists
    for d in trace_dirs:
        key = str(d).rstrip("/") if is_url(str(d)) else os.path.realpath(os.path.expanduser(d))
        if key in seen:
            warnings.warn(f"{seen[key]} is given more than once; reading it once", stacklevel=2)
            continue
        seen[key] = d
        rec, st = read_traces(d), run_status(d)
        n = len(rec["sri"])
        partial = not st["complete"] or st["planned"] != n
        if partial:
            of = f"{n} of {st['planned']} records" if st["planned"] else f"{n} records"
            warnings.warn(f"{d} is a partial run ({of}, {st['shards']} of "
                          f"{st['planned_shards'] or '?'} shards): its numbers cover only these "
                          "records; rerun its trace command to finish it", stacklevel=2)
        for s, a, sig, ref in zip(rec["set"], rec["attack"], rec["sri"], rec["refused"]):
            g = groups.setdefault((f"{s}/{a}" if a != "none" else s, len(sig)),
                                  {"sri": [], "refused": [], "runs": {}})
            g["sri"].append(sig)
            g["refused"].append(ref)
            g["runs"][key] = (st["planned"], partial)
    lengths: dict = {}
    for name, t in groups:
        lengths.setdefault(name, set()).add(t)
    out = {}
    for (name, t), v in groups.items():
        planned = [p for p, _ in v["runs"].values()]
        out[name if len(lengths[name]) == 1 else f"{name} [T={t}]"] = {
            "sri": np.asarray(v["sri"]), "refused": np.asarray(v["refused"]),
            "planned": None if None in planned else sum(planned),
            "partial": any(p for _, p in v["runs"].values())}
    return out


def run_demo(out_dir="sri_out", *, model_name: str = DEMO_MODEL, dtype: str = "auto",
             n_calib_harmless: int = N_CALIB_HARMLESS, n_calib_harmful: int = N_CALIB_HARMFUL,
             n_test: int = N_TEST, n_guard_train: int = N_GUARD_TRAIN,
             n_guard_holdout: int = N_GUARD_HOLDOUT, guard: bool = True,
             attacks: Sequence[str] = DEMO_ATTACKS, batch_size: int = 64, gen_length=None,
             progress: bool = True, centers_path: Optional[str] = None,
             system_prompt: Optional[str] = "default", safe_prompts: bool = True,
             allow_unverified: bool = False, log=print) -> dict:
    """Calibrate centers, trace held-out benign, harmful and jailbreak prompts, summarise and
    plot, then train the SRI Guard on benign traces and evaluate it on the attacks: the whole
    workflow, offline, on the embedded default model. Rerunning resumes (traces and the
    centers on disk are reused, the guard is replaced; ``out_dir/centers`` and ``/guard`` must
    be missing, empty or artifacts of those kinds, checked before anything runs). ``system_prompt``: "default" keeps the model's ("You are a helpful assistant"),
    None renders prompts without a system turn. ``safe_prompts``: the prompt sets' text is
    encoded as plain text (control text in a prompt stays text; ``Model.safe_prompts``)."""
    from . import load_model
    from .commands.evaluate import check_own_outputs
    from .detector.protocol import fit_and_score_guard
    from .detector.report import guard_table
    from .sri.centers import calibrate, check_compatible, load_centers, save_centers
    from .tracing import read_traces, trace

    t0 = time.perf_counter()
    out = Path(out_dir)
    check_own_outputs(out)
    model = load_model(model_name, dtype=resolve_dtype(dtype))
    if system_prompt != "default":
        model.system_prompt = system_prompt
    model.safe_prompts = safe_prompts
    cfg = default_sampler(model, gen_length=gen_length)
    log(f"model {model.name} ({model.kind}, {model.config.num_layers} layers, "
        f"dtype {np.dtype(model.dtype)}), sampler {cfg.mode} T={cfg.steps} gen={cfg.gen_length}")

    sp = evaluation_splits(n_calib_harmless=n_calib_harmless, n_calib_harmful=n_calib_harmful,
                           n_train=n_guard_train, n_holdout=n_guard_holdout, n_test=n_test,
                           n_attack=n_test, attacks=attacks)
    if centers_path and Path(centers_path).exists():
        centers = load_centers(centers_path, allow_unverified=allow_unverified)
        log(f"centers loaded from {centers_path}")
    elif (out / "centers" / "centers.npz").is_file():  # a rerun resumes with its own centers
        centers = load_centers(out / "centers")
        check_compatible(centers, model, cfg)
        log(f"centers loaded from {out / 'centers'} (saved by an earlier run)")
    else:
        centers = calibrate(model, sp["calib_harmless"], sp["calib_harmful"], cfg,
                            batch_size=batch_size, progress=progress,
                            extra_meta={"sets": {"harmless": sp["sets"]["benign"],
                                                 "harmful": sp["sets"]["harmful"]}})
        save_centers(centers, out / "centers")
        log(f"centers calibrated: {json.dumps(centers.meta['counts'])}")

    def run(set_name, prompts, ids, attack="none"):
        d = out / "traces" / f"{set_name}__{attack}"
        trace(model, prompts, cfg, centers=centers, out_dir=d, ids=ids, set_name=set_name,
              attack=attack, batch_size=batch_size, progress=progress)
        return d

    ids = sp["ids"]
    dirs = [run("benign", sp["benign_test"], ids["benign_test"])]
    dirs += [run("advbench", p, ids["harmful"], a) for a, p in sp["harmful"].items()]
    groups = groups_from_traces(dirs)
    rows = summarize(groups)
    figs = make_figures(groups, out / "figures", centers=centers)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    log("\n" + format_table(rows))

    guard_res = None
    if guard:
        tr = read_traces(run("guard_train", sp["benign_train"], ids["benign_train"]))
        ho = read_traces(run("guard_holdout", sp["benign_holdout"], ids["benign_holdout"]))
        atk = {(k.split("/", 1)[1] if "/" in k else "none"): (g["sri"], g["refused"])
               for k, g in groups.items() if k.startswith("advbench")}
        guard_res = fit_and_score_guard(tr["sri"], ho["sri"], (groups["benign"]["sri"],
                                                                groups["benign"]["refused"]),
                                        atk, centers=centers)
        guard_res.guard.save(out / "guard", overwrite=True)
        (out / "guard_eval.json").write_text(json.dumps(
            {"benign": guard_res.benign, "attacks": guard_res.attacks,
             "means": guard_res.means, "threshold": guard_res.guard.threshold_,
             "n_train": len(tr["sri"]), "n_holdout": len(ho["sri"])}, indent=2) + "\n")
        log(f"\nSRI Guard ({guard_res.guard.num_params()} parameters) trained on "
            f"{len(tr['sri'])} benign traces, threshold from {len(ho['sri'])} held-out benign "
            f"traces; saved to {out / 'guard'}")
        log("\n".join(guard_table(guard_res.benign, guard_res.attacks, guard_res.means)))
    log(f"\nfigures: {', '.join(str(p) for p in figs)}")
    log(f"records: {out / 'traces'}   ({time.perf_counter() - t0:.0f} s)")
    return {"rows": rows, "figures": figs, "centers": centers, "trace_dirs": dirs,
            "guard": guard_res}

