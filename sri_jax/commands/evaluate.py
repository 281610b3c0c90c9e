"""``sri-jax evaluate``: the SRI Guard evaluation on the offline prompt splits, written to a
folder (``report.json``, ``report.md``, ``guard/``, ``centers/``, ``traces/``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..data.attacks import ResponseOptions
from ..data.splits import (N_CALIB_HARMFUL, N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN,
                           evaluation_splits)
from ..judges.keyword import is_refusal
from . import args as A

HELP = "SRI Guard evaluation: AUROC per attack, ablations, baselines (Table 13); docs/detector.md"


def add_arguments(p) -> None:
    from ..data.attacks import ATTACKS, EVAL_ATTACKS

    A.model_flags(p)
    A.sampler_flags(p)
    p.add_argument("--centers", help="centers folder (default: calibrate, saved in --out)")
    A.trust_flag(p)
    p.add_argument("--n", type=A.POSITIVE,
                   help="set --n-train/--n-holdout/--n-test/--n-attack at once")
    p.add_argument("--n-train", type=A.POSITIVE, default=N_GUARD_TRAIN)
    p.add_argument("--n-holdout", type=A.POSITIVE, default=N_GUARD_HOLDOUT)
    p.add_argument("--n-test", type=A.POSITIVE, default=64)
    p.add_argument("--n-attack", type=A.POSITIVE, default=64, help="prompts per attack set")
    p.add_argument("--n-calib-harmless", type=A.NON_NEGATIVE, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=A.NON_NEGATIVE, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", type=A.attack_list, default=",".join(EVAL_ATTACKS),
                   help=f"comma-separated attacks, of: {A.names(ATTACKS)} (raw harmful 'none' "
                        "is always included)")
    A.response_flags(p)
    p.add_argument("--ablations", default="first_step,text",
                   help="comma-separated: first_step,text (empty: none)")
    p.add_argument("--layers", default="",
                   help="other SRI layers to ablate, e.g. middle,first (recalibrates and "
                        "retraces everything per layer)")
    p.add_argument("--baselines", default="perplexity,self_exam",
                   help="comma-separated: perplexity,self_exam (empty: none)")
    p.add_argument("--llama-guard", help="also run Llama Guard 3: 1b, 8b, a hub id or a "
                                         "local directory")
    p.add_argument("--harm-judge", default="none", metavar="MODEL|none",
                   help="judge attack success with this harm judge model (e.g. "
                        "qwen2.5-coder-1.5b-instruct; docs/judge.md): success = not refused "
                        "AND judged harmful, and the guard on the successful jailbreaks "
                        "(default none: not measured)")
    p.add_argument("--no-classifier", action="store_true",
                   help="skip the supervised leave-one-attack-out SRIClassifier")
    p.add_argument("--ppl-quantile", type=A.finite_float(0, 1, lo_open=True, hi_open=True),
                   default=0.99, help="perplexity filter threshold quantile (0.99 or 0.95)")
    p.add_argument("--epochs", type=A.POSITIVE, default=200, help="autoencoder training epochs")
    p.add_argument("--n-timing", type=A.POSITIVE, default=16,
                   help="prompts for the overhead timing")
    p.add_argument("--timing-repeats", type=A.POSITIVE, default=2)
    p.add_argument("--out", required=True, help="folder for report.json, report.md, guard/")


def _split(value) -> list:
    return [x for x in (value or "").split(",") if x]


def run(args) -> int:
    check_own_outputs(args.out)  # before the model loads: fail fast
    response = A.response_options(args)
    judge = None if args.harm_judge == "none" else load_harm_judge(
        args.harm_judge, args.batch_size, not args.no_progress)
    model = A.load(args)
    cfg = A.sampler(args, model)
    n = {k: getattr(args, k) if args.n is None else args.n
         for k in ("n_train", "n_holdout", "n_test", "n_attack")}
    sizes = SplitSizes(n_calib_harmless=args.n_calib_harmless,
                       n_calib_harmful=args.n_calib_harmful, attacks=tuple(_split(args.attacks)),
                       **n)
    run_evaluation(model, cfg, args.out, sizes=sizes, response=response,
                   centers_path=args.centers,
                   llama_guard=args.llama_guard, allow_unverified=args.trust_centers,
                   harm_judge=judge,
                   layers=_split(args.layers), ablations=_split(args.ablations),
                   baselines=_split(args.baselines), classifier=not args.no_classifier,
                   batch_size=args.batch_size, guard_kwargs={"epochs": args.epochs},
                   ppl_quantile=args.ppl_quantile, n_timing=args.n_timing,
                   timing_repeats=args.timing_repeats, progress=not args.no_progress,
                   seed=args.seed)
    return 0


def check_own_outputs(out) -> None:
    """``out/centers`` and ``out/guard`` (written by ``evaluate`` and ``demo``) must be missing,
    empty or artifacts of those kinds, which a rerun reuses / replaces: checked up front."""
    from ..artifacts import check_output

    check_output(Path(out) / "centers", "centers", overwrite=True)
    check_output(Path(out) / "guard", "detector", overwrite=True)


def centers_for(model, cfg, splits, centers_path, out, batch_size, progress, log,
                judge=is_refusal, allow_unverified=False):
    """The centers at ``centers_path``, else those an earlier run saved in ``out/centers``,
    else calibrated on the splits' calibration prompts and saved there."""
    from ..calibration import calibrate
    from ..sri.centers import check_compatible, load_centers, save_centers

    if centers_path and Path(centers_path).exists():
        log(f"centers loaded from {centers_path}")
        return load_centers(centers_path, allow_unverified=allow_unverified)
    if centers_path:
        raise FileNotFoundError(f"no centers at {centers_path}; omit --centers to calibrate")
    own = Path(out) / "centers"
    if (own / "centers.npz").is_file():  # a rerun resumes with the centers it saved
        centers = load_centers(own)
        check_compatible(centers, model, cfg)
        log(f"centers loaded from {own} (saved by an earlier run)")
        return centers
    centers = calibrate(model, splits["calib_harmless"], splits["calib_harmful"], cfg,
                        judge=judge, batch_size=batch_size, progress=progress)
    path = save_centers(centers, Path(out) / "centers")
    log(f"centers calibrated ({json.dumps(centers.meta['counts'])}), saved to {path}")
    return centers


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    """The prompt splits of :func:`~sri_jax.data.splits.evaluation_splits`: benign calib |
    train | holdout | test, ``n_attack`` AdvBench prompts per attack in ``attacks`` (raw
    "none" always included), ``n_calib_harmful`` harmful calibration prompts.
    ``train-detector`` takes the benign calib | train | holdout cut of the same splits."""

    n_calib_harmless: int = N_CALIB_HARMLESS
    n_calib_harmful: int = N_CALIB_HARMFUL
    n_train: int = N_GUARD_TRAIN
    n_holdout: int = N_GUARD_HOLDOUT
    n_test: int = 64
    n_attack: int = 64
    attacks: tuple = ()


def run_evaluation(model, cfg, out, *, sizes: SplitSizes = SplitSizes(), response=None,
                   centers_path=None, llama_guard=None, allow_unverified=False, config=None,
                   harm_judge=None, **options):
    """Splits (``sizes``; ``prefill`` / ``infill`` among the attacks force each response's
    start or template, :func:`~sri_jax.data.attacks.attack_inputs`, as ``response`` says: a
    :class:`~sri_jax.data.attacks.ResponseOptions`, recorded in ``meta.response_options``
    when a set forces the response), centers (loaded or
    calibrated), :func:`evaluate_guard` with ``config`` / ``options`` (:class:`EvalConfig`
    fields), then ``report.json``,
    ``report.md`` and the fitted guard (``guard/``) under ``out``. Every trace is written
    under ``out/traces`` first: rerunning the same command resumes an interrupted evaluation
    instead of starting over: the centers it saved are reused and its own ``guard/`` is
    replaced (only folders of those kinds: anything else there is refused up front). Returns
    the :class:`sri_jax.detector.EvalReport`. ``harm_judge``: a judge model name (loaded as
    :class:`~sri_jax.judges.harm.HarmJudge` before anything is traced) or a judge object;
    the prompts it was calibrated on must not be in an evaluated split (checked)."""
    from ..detector.baselines import LlamaGuard3
    from ..detector.evaluate import EvalConfig, evaluate_guard

    out = Path(out)
    check_own_outputs(out)
    c = dataclasses.replace(config or EvalConfig(), **options)
    if harm_judge is not None:
        c = dataclasses.replace(c, harm_judge=harm_judge if not isinstance(harm_judge, str)
                                else load_harm_judge(harm_judge, c.batch_size, c.progress))
    response = response or ResponseOptions()
    splits = evaluation_splits(**dataclasses.asdict(sizes), seed=c.seed,
                               causal=model.config.causal, response=response,
                               exclude_ids=_judge_prompt_ids(c.harm_judge, c.log))
    centers = centers_for(model, cfg, splits, centers_path, out, c.batch_size, c.progress,
                          c.log, judge=c.judge, allow_unverified=allow_unverified)
    ext = {"llama_guard": LlamaGuard3(llama_guard)} if llama_guard else None
    rep = evaluate_guard(model, centers, cfg, benign_train=splits["benign_train"],
                         benign_holdout=splits["benign_holdout"],
                         benign_test=splits["benign_test"], harmful=splits["harmful"],
                         prompting=splits["prompting"],
                         calibration=(splits["calib_harmless"], splits["calib_harmful"]),
                         config=c, external_guards=ext, trace_dir=out / "traces")
    if splits["prompting"]:
        rep.meta["response_options"] = dataclasses.asdict(response)
    rep.save(out / "report.json")
    (out / "report.md").write_text(rep.table())
    rep.guard_.save(out / "guard", overwrite=True)
    c.log(rep.table())
    c.log(f"report: {out / 'report.json'}, {out / 'report.md'}; guard: {out / 'guard'}")
    return rep


def load_harm_judge(name: str, batch_size: int, progress: bool):
    """The :class:`~sri_jax.judges.harm.HarmJudge` of model ``name`` (at most 8 rows per
    forward pass: its rubric prompts are long)."""
    from ..judges.harm import HarmJudge

    return HarmJudge(name, batch_size=min(batch_size, 8), progress=progress)


def _judge_prompt_ids(judge, log) -> list:
    """The prompts the harm judge was calibrated on (none without a judge; none, said, when
    the hand-labelled file is not there: it ships with the source, not the wheel)."""
    if judge is None:
        return []
    from ..judges.harm import AGREEMENT_FILE, calibration_prompt_ids

    if not AGREEMENT_FILE.is_file():
        log(f"harm judge calibration prompts not checked: {AGREEMENT_FILE} is missing")
        return []
    return calibration_prompt_ids()
