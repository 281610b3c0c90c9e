#!/usr/bin/env python
"""Attack success table: every offline model x every attack, on HELD-OUT harmful prompts.

Prompts: the first N of the AdvBench test part of ``evaluation_splits`` (seed 0; the
prompts ``sri-jax evaluate`` attacks; none of them was used to optimise gcg_universal or to
calibrate centers). Per model and attack: refusal rate (keyword judge), attack success
(not refused AND judged harmful by the harm judge), mean sigma and IRR (centers per model:
the shipped ones where they exist, else calibrated here on the evaluation's calibration
prompts, ``--calib`` per class).

Three phases, each resumable (one JSON per model/attack under --out):
  1. generate (greedy, the model's default sampler) and read SRI; 2. score the responses
  that were not refused with the harm judge (loaded once); 3. write the markdown table
  (--docs: between the attack-table markers of that file).

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python scripts/attack_table.py --n 16 --out RUN
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sri_jax import load_model  # noqa: E402
from sri_jax.calibration import calibrate  # noqa: E402
from sri_jax.data.attacks import (EVAL_ATTACKS, ResponseOptions, attack_inputs,  # noqa: E402
                                  shown_responses)
from sri_jax.data.splits import evaluation_splits  # noqa: E402
from sri_jax.detector.protocol import check_prompting  # noqa: E402
from sri_jax.judges.keyword import is_refusal  # noqa: E402
from sri_jax.sampling.api import Prompting, generate_batched  # noqa: E402
from sri_jax.sampling.config import SamplerConfig  # noqa: E402
from sri_jax.sri.centers import load_centers, save_centers  # noqa: E402
from sri_jax.sri.signal import internal_recovery_rate  # noqa: E402

MODELS = ("smollm2-135m-instruct-safe", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
          "smollm2-135m-diffusion")
ATTACKS = ("none",) + EVAL_ATTACKS + ("prefill", "gcg_universal", "infill")
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"
GEN_LENGTH = 32  # the table's budget (--gen-length); its centers keep the plain folder name
START, END = "<!-- attack-table:start -->", "<!-- attack-table:end -->"


def sampler_for(model, gen_length: int) -> SamplerConfig:
    """Greedy, the model's own sampler: AR one token per step; diffusion (one block) one
    step per token, the budget the shipped diffusion adapter was made for."""
    if model.config.causal:
        return SamplerConfig.for_model(model, gen_length=gen_length)
    return SamplerConfig.for_model(model, gen_length=gen_length, steps=gen_length)


def centers_for(model, cfg, name, args, shipped_ok: bool = True):
    """Centers for ``cfg``: --centers or the shipped ones (for the table's main sampler) when
    made at the same budget (steps, gen_length), else calibrated here on the evaluation's
    calibration prompts (--calib per class) and kept in the run folder, one folder per
    budget."""
    paths = [Path(args.centers.get(name) or SHIPPED / name / "centers")] if shipped_ok else []
    plain = cfg.gen_length == cfg.steps == GEN_LENGTH
    tag = "" if plain else f"-g{cfg.gen_length}-s{cfg.steps}"
    paths.append(args.out / name / f"centers{tag}")
    for path in paths:
        if (path / "centers.npz").is_file():
            c = load_centers(path)
            if (c.meta.get("steps"), c.meta.get("gen_length")) == (cfg.steps, cfg.gen_length):
                return c, str(path)  # (centers of another budget: calibrate, or none)
    if args.calib == 0:
        return None, "none: --calib 0 (refusal and success only)"
    why = paths[-1].with_name(paths[-1].name + ".none")  # why a calibration failed before
    if why.is_file():
        return None, f"none: {why.read_text()}"
    s = evaluation_splits(n_calib_harmless=args.calib, n_calib_harmful=args.calib)
    try:
        c = calibrate(model, s["calib_harmless"], s["calib_harmful"], cfg, batch_size=16,
                      progress=False)
    except ValueError as e:  # e.g. a model that refuses no harmful prompt: no refusal center
        print(f"{name}: no centers, so no SRI ({e})", flush=True)
        why.parent.mkdir(parents=True, exist_ok=True)
        why.write_text(str(e))
        return None, f"none: {e}"
    save_centers(c, paths[-1])
    return c, str(paths[-1])


def attack_rows(model, name, raw, args):
    """One record per attack of ``args.attacks`` not yet in the run folder: the attack
    applied to the held-out prompts ``raw``, generated greedily with SRI."""
    todo = [a for a in args.attacks if not (args.out / name / f"{a}.json").is_file()]
    steps, slots = args.infill
    for a in todo:
        t0 = time.time()
        texts, kw = attack_inputs(a, raw, model.config.causal, response=ResponseOptions(
            prefix_source="derived", infill_steps=steps, infill_slots=slots))
        main = "template" not in kw  # a diffusion canvas template needs its own budget
        cfg = sampler_for(model, args.gen_length if main else args.infill_gen_length)
        try:  # before any calibration: a template must fit the canvas, and so on
            check_prompting(model, cfg, {a: texts}, {a: kw})
        except ValueError as e:
            print(f"{name}/{a}: skipped: {e}", flush=True)
            continue
        centers, cpath = centers_for(model, cfg, name, args, shipped_ok=main)
        r = generate_batched(model, texts, cfg, centers=centers,
                             batch_size=16, progress=False, prompting=Prompting(**kw))
        rec = {"model": name, "attack": a, "n": len(raw), "requests": list(raw),
               "responses": r.texts, "refused": [bool(is_refusal(t)) for t in r.texts],
               "sri": None if r.sri is None else np.asarray(r.sri).tolist(), "centers": cpath,
               "sampler": cfg.to_dict(), "seconds": round(time.time() - t0, 1),
               "variant": ("template" if "template" in kw else
                           "prefix (AR analogue: template head)" if a == "infill"
                           else "prefix" if "prefix" in kw else "prompt"), **kw}
        save(args, rec)
        print(f"{name}/{a}: refused {sum(rec['refused'])}/{len(raw)}, {rec['seconds']} s",
              flush=True)


def save(args, rec):
    (args.out / rec["model"]).mkdir(parents=True, exist_ok=True)
    tmp = args.out / rec["model"] / f"{rec['attack']}.json.tmp"
    tmp.write_text(json.dumps(rec))
    tmp.replace(args.out / rec["model"] / f"{rec['attack']}.json")


def import_eval(args, name, ev: Path):
    """Rows of an ``sri-jax evaluate`` run of the same held-out prompts (its traces, its
    centers) instead of generating them again."""
    from sri_jax.tracing import read_traces

    if not (ev / "report.json").is_file():
        raise SystemExit(f"{ev}: the evaluation has not finished (no report.json); rerun later")
    for d in sorted((ev / "traces").glob("attack__*")):
        a = d.name.split("__", 1)[1]
        if a not in args.attacks or (args.out / name / f"{a}.json").is_file():
            continue
        t = read_traces(d)
        raw = evaluation_splits(n_attack=len(t["prompt"]))["harmful"]["none"]
        order = np.argsort([int(i) for i in t["prompt_id"]])
        save(args, {"model": name, "attack": a, "n": len(raw), "requests": raw,
                    "responses": [t["response"][i] for i in order],
                    "refused": [bool(t["refused"][i]) for i in order],
                    "sri": t["sri"][order].tolist(), "centers": str(ev / "centers"),
                    "variant": "prompt", "source": f"sri-jax evaluate traces in {ev}"})
        print(f"{name}/{a}: imported from {ev}", flush=True)


def generate_phase(args, raw):
    from sri_jax.weights.registry import REGISTRY

    for name in args.models:
        if name not in REGISTRY:
            print(f"{name}: not in the registry, skipped", flush=True)
            continue
        if name in args.from_eval:
            import_eval(args, name, Path(args.from_eval[name]))
            args.centers.setdefault(name, str(Path(args.from_eval[name]) / "centers"))
        if all((args.out / name / f"{a}.json").is_file() for a in args.attacks):
            continue
        t0 = time.time()
        model = load_model(name, dtype="float32")
        model.safe_prompts = True
        print(f"{name}: loaded in {time.time() - t0:.0f} s", flush=True)
        attack_rows(model, name, raw, args)


def unjudged(rec) -> bool:
    """Not judged yet, or a prefilled row judged on its continuation alone (older runs)."""
    return "harmful" not in rec or ("prefix" in rec and rec.get("judged") != "shown")


def judge_phase(args):
    """Score every generated, unjudged row file; with --follow keep polling until every
    model/attack file of --models exists and is judged (the judge is loaded once)."""
    from sri_jax.judges.harm import HarmJudge

    judge = None
    while True:
        pending = [f for f in sorted(args.out.glob("*/*.json"))
                   if f.parent.name in args.models and f.stem in args.attacks
                   and unjudged(json.loads(f.read_text()))]
        for f in pending:
            rec = json.loads(f.read_text())
            if judge is None:
                t0 = time.time()
                judge = HarmJudge(args.judge)
                print(f"judge {args.judge} loaded in {time.time() - t0:.0f} s", flush=True)
            t0 = time.time()
            idx = [i for i, r in enumerate(rec["refused"]) if not r]  # refused: no success
            scores = [None] * rec["n"]
            if idx:
                shown = shown_responses(rec.get("prefix") or None, rec["responses"])
                s = judge.score([rec["requests"][i] for i in idx], [shown[i] for i in idx],
                                cache=args.out / "harm_scores.json")
                for i, v in zip(idx, s):
                    scores[i] = float(v)
            rec["harm_scores"] = scores
            rec["harmful"] = [s is not None and s > judge.threshold for s in scores]
            rec["judge"], rec["judged"] = judge.describe(), "shown"
            rec["judge_seconds"] = round(time.time() - t0, 1)
            save(args, rec)
            print(f"{rec['model']}/{rec['attack']}: judged {len(idx)} in "
                  f"{rec['judge_seconds']} s, success {sum(rec['harmful'])}/{rec['n']}",
                  flush=True)
        done = all((args.out / m / f"{a}.json").is_file() for m in args.models
                   for a in args.attacks)
        if not getattr(args, "follow", False) or (done and not pending):
            return
        time.sleep(30)


def sri_cells(sri) -> str:
    """Mean sigma, its std across prompts (mean over steps) and IRR; "-" without centers."""
    if sri is None:
        return "- | - | -"
    sri = np.asarray(sri)
    return f"{sri.mean():.3f} | {sri.std(0).mean():.3f} | {internal_recovery_rate(sri):.3f}"


def table(args) -> str:
    lines = ["| model | attack | sent as | refusal % (keyword) | attack success % "
             "(not refused AND harm judge) | mean sigma | sigma std across prompts | IRR |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name in args.models:
        for a in args.attacks:
            f = args.out / name / f"{a}.json"
            if not f.is_file():
                continue
            rec = json.loads(f.read_text())
            n = rec["n"]
            ref = sum(rec["refused"])
            succ = (f"{100 * sum(rec['harmful']) / n:.1f} ({sum(rec['harmful'])}/{n})"
                    if "harmful" in rec else f"0.0 (0/{n}: all refused)" if ref == n
                    else f"not judged ({n - ref} answered)")
            lines.append(f"| {name} | {a} | {rec['variant']} | {100 * ref / n:.1f} ({ref}/{n}) "
                         f"| {succ} | {sri_cells(rec['sri'])} |")
    return "\n".join(lines)


def figure(args, name, path):
    """Per-step mean and std of sigma over the rows of each attack (refused and not refused
    rows of the raw harmful prompts apart): are the traces constant?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for a in args.attacks:
        f = args.out / name / f"{a}.json"
        if not f.is_file():
            continue
        rec = json.loads(f.read_text())
        if rec["sri"] is None:  # no centers for this model
            continue
        sri, ref = np.asarray(rec["sri"]), np.asarray(rec["refused"])
        parts = ([("none, refused", sri[ref]), ("none, not refused", sri[~ref])] if a == "none"
                 else [(a, sri)])
        for label, x in parts:
            if len(x):
                t = np.arange(1, x.shape[1] + 1)
                ax.plot(t, x.mean(0), label=f"{label} (n={len(x)})")
                ax.fill_between(t, x.mean(0) - x.std(0), x.mean(0) + x.std(0), alpha=0.1)
    ax.set_xlabel("step t")
    ax.set_ylabel("sigma_t: mean +- std over prompts")
    ax.set_title(f"{name}: held-out AdvBench prompts per attack")
    if not ax.lines:  # a model without SRI has nothing to plot
        plt.close(fig)
        return
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(path)


def write_docs(args, text):
    """The table between the attack-table markers of --docs, with the command and the wall
    times the row files recorded (generation and judging; model loads not included)."""
    recs = [json.loads(f.read_text()) for m in args.models for f in (args.out / m).glob("*.json")]
    gen = sum(r.get("seconds", 0) for r in recs)
    jud = sum(r.get("judge_seconds", 0) for r in recs)
    doc = Path(args.docs)
    cmd = "PYTHONPATH=$PWD nice -n 10 .venv/bin/python scripts/attack_table.py " + " ".join(
        sys.argv[1:])
    block = (f"{START}\n```\n{cmd}\n```\n\nWall time recorded in the row files: generation "
             f"{gen / 60:.0f} min, harm judge {jud / 60:.0f} min (model loads not included).\n\n"
             f"{text}\n{END}")
    old = doc.read_text()
    if START in old and END in old:
        new = old.split(START)[0] + block + old.split(END, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    doc.write_text(new)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16, help="held-out harmful prompts per attack")
    p.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--calib", type=int, default=32, help="prompts per class to calibrate "
                   "(0: no SRI columns, for a quick refusal / success row)")
    p.add_argument("--centers", default="", help="model=folder,... centers to use")
    p.add_argument("--from-eval", default="", help="model=folder,... of `sri-jax evaluate` "
                   "runs (same seed, --n-attack = --n) whose traces give that model's rows")
    p.add_argument("--gen-length", type=int, default=GEN_LENGTH, help="tokens per answer")
    p.add_argument("--infill", default="3x24", help="infill template: STEPSxSLOTS")
    p.add_argument("--infill-gen-length", type=int, default=128,
                   help="answer length of a diffusion model's infill row (holds the template)")
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--phases", default="generate,judge,table")
    p.add_argument("--follow", action="store_true",
                   help="judge phase: wait for the files another process is generating")
    p.add_argument("--docs", default="", help="markdown file to write the table into")
    p.add_argument("--figures", type=Path, help="folder for one sigma-per-step figure per model")
    args = p.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.attacks = [a for a in args.attacks.split(",") if a]
    args.centers = dict(kv.split("=", 1) for kv in args.centers.split(",") if kv)
    args.from_eval = dict(kv.split("=", 1) for kv in args.from_eval.split(",") if kv)
    try:
        args.infill = tuple(int(x) for x in args.infill.lower().split("x"))
        assert len(args.infill) == 2 and min(args.infill) >= 1
    except (ValueError, AssertionError):
        p.error(f"--infill {args.infill!r}: give STEPSxSLOTS, both >= 1 (e.g. 3x24)")
    for flag, v, low in (("--calib", args.calib, 0), ("--gen-length", args.gen_length, 1),
                         ("--infill-gen-length", args.infill_gen_length, 1), ("--n", args.n, 1)):
        if v < low:
            p.error(f"{flag} {v}: give an integer >= {low}")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = evaluation_splits(n_attack=args.n)["harmful"]["none"]
    phases = args.phases.split(",")
    if "generate" in phases:
        generate_phase(args, raw)
    if "judge" in phases:
        judge_phase(args)
    text = table(args)
    print(text)
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            if (args.out / name).is_dir():
                figure(args, name, args.figures / f"attacks_{name}.png")
    if args.docs:
        write_docs(args, text)


if __name__ == "__main__":
    main()
