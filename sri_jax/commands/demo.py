"""``sri-jax demo``: the whole workflow offline on the embedded default model."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..data.attacks import DEMO_ATTACKS, ResponseOptions
from ..data.splits import (N_CALIB_HARMFUL, N_CALIB_HARMLESS, N_GUARD_HOLDOUT,
                           N_GUARD_TRAIN, N_TEST, evaluation_splits)
from . import args as A
from .args import DEMO_MODEL

HELP = "the whole workflow offline on the embedded default model"


def add_arguments(p) -> None:
    from ..data.attacks import ATTACKS

    A.model_flags(p)
    p.add_argument("--out", default="sri_out", help="output folder (default sri_out)")
    p.add_argument("--n-test", type=A.POSITIVE, default=N_TEST,
                   help="held-out prompts per set/attack")
    p.add_argument("--n-calib-harmless", type=A.NON_NEGATIVE, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=A.NON_NEGATIVE, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", type=A.attack_list, default=",".join(DEMO_ATTACKS),
                   help=f"comma-separated attacks, of: {A.names(ATTACKS)} (to trace)")
    A.response_flags(p)
    p.add_argument("--gen-length", type=A.POSITIVE)
    p.add_argument("--centers", help="reuse centers from this folder instead of calibrating "
                                     "(e.g. checkpoints/smollm2-135m-instruct-safe/centers)")
    A.trust_flag(p)
    p.add_argument("--n-guard-train", type=A.POSITIVE, default=N_GUARD_TRAIN,
                   help="benign traces the SRI Guard is trained on")
    p.add_argument("--n-guard-holdout", type=A.POSITIVE, default=N_GUARD_HOLDOUT,
                   help="held-out benign traces that set the guard's threshold")
    p.add_argument("--no-guard", action="store_true", help="skip training/evaluating the guard")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the AR-versus-diffusion comparison (run when the model has a "
                        "shipped diffusion adaptation, e.g. smollm2-135m-diffusion)")


def run(args) -> int:
    run_demo(args.out, DemoConfig(
        model_name=args.model, dtype=args.dtype, n_calib_harmless=args.n_calib_harmless,
        n_calib_harmful=args.n_calib_harmful, n_test=args.n_test,
        n_guard_train=args.n_guard_train, n_guard_holdout=args.n_guard_holdout,
        guard=not args.no_guard, compare=not args.no_compare,
        attacks=tuple(a for a in args.attacks.split(",") if a),
        response=A.response_options(args),
        batch_size=args.batch_size, gen_length=args.gen_length,
        progress=not args.no_progress, centers_path=args.centers,
        allow_unverified=args.trust_centers,
        system_prompt=None if args.no_system_prompt else "default",
        safe_prompts=A.prompt_encoding(args) == "safe"))
    return 0


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The options of :func:`run_demo`. ``system_prompt``: "default" keeps the model's ("You
    are a helpful assistant"), None renders prompts without a system turn. ``safe_prompts``:
    the prompt sets' text is encoded as plain text (control text in a prompt stays text;
    ``Model.safe_prompts``). ``centers_path``: reuse these centers instead of calibrating.
    ``compare``: when the model has a shipped diffusion adaptation, compare the two decoders
    (:mod:`sri_jax.comparison`, ``n_compare`` prompts per class for centers and test).
    ``response``: how ``prefill`` / ``infill`` in ``attacks`` force the response
    (:class:`~sri_jax.data.attacks.ResponseOptions`)."""

    model_name: str = DEMO_MODEL
    dtype: str = "auto"
    n_calib_harmless: int = N_CALIB_HARMLESS
    n_calib_harmful: int = N_CALIB_HARMFUL
    n_test: int = N_TEST
    n_guard_train: int = N_GUARD_TRAIN
    n_guard_holdout: int = N_GUARD_HOLDOUT
    guard: bool = True
    compare: bool = True
    n_compare: int = 16
    attacks: Sequence[str] = DEMO_ATTACKS
    response: ResponseOptions = ResponseOptions()
    batch_size: int = 64
    gen_length: Optional[int] = None
    progress: bool = True
    centers_path: Optional[str] = None
    system_prompt: Optional[str] = "default"
    safe_prompts: bool = True
    allow_unverified: bool = False


def run_demo(out_dir="sri_out", config: Optional[DemoConfig] = None, *, log=print,
             **options) -> dict:
    """Calibrate centers, trace held-out benign, harmful and jailbreak prompts, summarise and
    plot, then train the SRI Guard on benign traces and evaluate it on the attacks, and (when
    the model has a shipped diffusion adaptation) compare AR and diffusion decoding: the
    whole workflow, offline, on the embedded default model. ``config``: a :class:`DemoConfig`;
    ``options``: its fields, over ``config``. Rerunning resumes (traces and the centers on
    disk are reused, the guard is replaced; ``out_dir/centers`` and ``/guard`` must be
    missing, empty or artifacts of those kinds, checked before anything runs)."""
    from ..detector.protocol import check_prompting
    from ..reporting import format_table, groups_from_traces, summarize
    from ..reporting.figures import make_figures
    from ..sampling.api import Prompting
    from ..tracing import TraceOptions, trace
    from .evaluate import check_own_outputs

    c = dataclasses.replace(config or DemoConfig(), **options)
    t0 = time.perf_counter()
    out = Path(out_dir)
    check_own_outputs(out)
    model, cfg = _model(c, log)
    sp = evaluation_splits(n_calib_harmless=c.n_calib_harmless,
                           n_calib_harmful=c.n_calib_harmful, n_train=c.n_guard_train,
                           n_holdout=c.n_guard_holdout, n_test=c.n_test, n_attack=c.n_test,
                           attacks=c.attacks, causal=model.config.causal,
                           response=c.response)
    check_prompting(model, cfg, sp["harmful"], sp["prompting"])
    centers = _centers(model, cfg, sp, out, c, log)

    def run_set(set_name, prompts, ids, attack="none"):
        d = out / "traces" / f"{set_name}__{attack}"
        trace(model, prompts, cfg, centers=centers, out_dir=d, ids=ids,
              prompting=Prompting(**sp["prompting"].get(attack, {})),
              options=TraceOptions(set_name=set_name, attack=attack, batch_size=c.batch_size,
                                   progress=c.progress))
        return d

    ids = sp["ids"]
    dirs = [run_set("benign", sp["benign_test"], ids["benign_test"])]
    dirs += [run_set("advbench", p, ids["harmful"], a) for a, p in sp["harmful"].items()]
    groups = groups_from_traces(dirs)
    rows = summarize(groups)
    figs = make_figures(groups, out / "figures", centers=centers)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    log("\n" + format_table(rows))
    guard_res = _guard(sp, groups, run_set, centers, out, log) if c.guard else None
    comparison = _compare(model, out, c, log) if c.compare else None
    if comparison and comparison.get("figure"):
        figs = [*figs, Path(comparison["figure"])]
    log(f"\nfigures: {', '.join(str(p) for p in figs)}")
    log(f"records: {out / 'traces'}   ({time.perf_counter() - t0:.0f} s)")
    return {"rows": rows, "figures": figs, "centers": centers, "trace_dirs": dirs,
            "guard": guard_res, "comparison": comparison}


def _model(c: DemoConfig, log):
    """The model (prompt rendering as configured) and its default sampler."""
    from ..sampling.config import SamplerConfig
    from ..weights.loader import load_model

    model = load_model(c.model_name, dtype=c.dtype)
    if c.system_prompt != "default":
        model.system_prompt = c.system_prompt
    model.safe_prompts = c.safe_prompts
    cfg = SamplerConfig.for_model(model, gen_length=c.gen_length)
    log(f"model {model.name} ({model.kind}, {model.config.num_layers} layers, "
        f"dtype {np.dtype(model.dtype)}), sampler {cfg.mode} T={cfg.steps} gen={cfg.gen_length}")
    return model, cfg


def _centers(model, cfg, sp, out: Path, c: DemoConfig, log):
    """The given centers, else those an earlier run saved in ``out/centers``, else
    calibrated on the splits' calibration prompts and saved there."""
    from ..calibration import calibrate
    from ..sri.centers import check_compatible, load_centers, save_centers

    if c.centers_path and Path(c.centers_path).exists():
        centers = load_centers(c.centers_path, allow_unverified=c.allow_unverified)
        log(f"centers loaded from {c.centers_path}")
    elif (out / "centers" / "centers.npz").is_file():  # a rerun resumes with its own centers
        centers = load_centers(out / "centers")
        check_compatible(centers, model, cfg)
        log(f"centers loaded from {out / 'centers'} (saved by an earlier run)")
    else:
        centers = calibrate(model, sp["calib_harmless"], sp["calib_harmful"], cfg,
                            batch_size=c.batch_size, progress=c.progress,
                            extra_meta={"sets": {"harmless": sp["sets"]["benign"],
                                                 "harmful": sp["sets"]["harmful"]}})
        save_centers(centers, out / "centers")
        log(f"centers calibrated: {json.dumps(centers.meta['counts'])}")
    return centers


def _guard(sp, groups, run_set, centers, out: Path, log):
    """Train the SRI Guard on benign traces, threshold it on held-out ones, score the demo's
    benign test and attack traces; save it to ``out/guard`` and ``out/guard_eval.json``."""
    from ..detector.protocol import fit_and_score_guard
    from ..detector.report import guard_table
    from ..tracing import read_traces

    ids = sp["ids"]
    tr = read_traces(run_set("guard_train", sp["benign_train"], ids["benign_train"]))
    ho = read_traces(run_set("guard_holdout", sp["benign_holdout"], ids["benign_holdout"]))
    atk = {(k.split("/", 1)[1] if "/" in k else "none"): (g["sri"], g["refused"])
           for k, g in groups.items() if k.startswith("advbench")}
    res = fit_and_score_guard(tr["sri"], ho["sri"], (groups["benign"]["sri"],
                                                     groups["benign"]["refused"]),
                              atk, centers=centers)
    res.guard.save(out / "guard", overwrite=True)
    (out / "guard_eval.json").write_text(json.dumps(
        {"benign": res.benign, "attacks": res.attacks, "means": res.means,
         "threshold": res.guard.threshold_, "n_train": len(tr["sri"]),
         "n_holdout": len(ho["sri"])}, indent=2) + "\n")
    log(f"\nSRI Guard ({res.guard.num_params()} parameters) trained on {len(tr['sri'])} "
        f"benign traces, threshold from {len(ho['sri'])} held-out benign traces; saved to "
        f"{out / 'guard'}")
    log("\n".join(guard_table(res.benign, res.attacks, res.means)))
    return res


def _compare(model, out: Path, c: DemoConfig, log):
    """AR versus diffusion (:func:`sri_jax.comparison.compare_decoders`) when ``model`` has a
    shipped diffusion adaptation; a rerun reuses ``out/compare/compare.json`` when it was
    made with the same models and settings."""
    from ..comparison import CompareConfig, compare_decoders, diffusion_partner, format_summary

    partner = diffusion_partner(model.name) if model.name else None
    if partner is None:
        return None
    cc = CompareConfig(n_calib=c.n_compare, n_test=c.n_compare, progress=c.progress)
    f = out / "compare" / "compare.json"
    if f.is_file():
        prev = json.loads(f.read_text())
        if (prev.get("models") == {"AR": model.name, "diffusion": partner}
                and prev.get("config") == json.loads(json.dumps(dataclasses.asdict(cc)))):
            log(f"\nAR versus diffusion (saved by an earlier run, {f}):\n"
                + format_summary(prev))
            return prev
    log(f"\nAR versus diffusion: {model.name} and {partner} on {c.n_compare} held-out "
        "prompts per class")
    return compare_decoders(model.name, partner, out_dir=out / "compare", config=cc, log=log)
