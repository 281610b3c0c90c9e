"""What the commands share: argument types and option groups, the model and sampler from the
parsed options, usage errors (exit 2)."""

from __future__ import annotations

import argparse
import math
import re

DEMO_MODEL = "smollm2-135m-instruct-safe"


class UsageError(Exception):
    """A usage error found after parsing (exit 2)."""


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


def layer_index(text):
    text = str(text)
    if text in ("last", "middle", "first"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; give last, middle, first or a block "
                                         "index") from None


def attack_list(text):
    from ..data.attacks import ATTACKS

    names = [a for a in str(text).split(",") if a]
    bad = [a for a in names if a not in ATTACKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {bad}; give a comma-separated "
                                         f"list of {', '.join(sorted(ATTACKS))}")
    return ",".join(names)


def infill_size(text):
    """argparse type: ``STEPSxSLOTS`` (e.g. ``2x12``), two integers >= 1 -> (steps, slots)."""
    m = re.fullmatch(r"(\d+)[xX](\d+)", str(text).strip())
    if m is None or min(int(m[1]), int(m[2])) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; give STEPSxSLOTS, two integers >= 1 "
                                         "(e.g. 2x12: 2 steps of 12 mask tokens)")
    return int(m[1]), int(m[2])


infill_size.__name__ = "STEPSxSLOTS"


def response_flags(p: argparse.ArgumentParser):
    """--prefix-tokens, --prefix-source and --infill of the response-side attacks in
    ``--attacks`` (:func:`response_options`)."""
    from ..data.attacks import PREFIX_SOURCES

    g = p.add_argument_group("response-side attacks (prefill, infill in --attacks)")
    g.add_argument("--prefix-tokens", type=POSITIVE, metavar="N",
                   help="force only the first N tokens of every prefix (prefill; infill on an "
                        "autoregressive model: the template's head) (default: whole)")
    g.add_argument("--prefix-source", choices=PREFIX_SOURCES,
                   help="prefill: the set's own target column when it has one, else 'Sure, "
                        "here is how to <request>' (auto, default); always that (derived); "
                        "or 'Sure, here is' (generic)")
    g.add_argument("--infill", type=infill_size, metavar="STEPSxSLOTS",
                   help="infill: the response template's numbered steps and mask tokens per "
                        "step (default 3x24)")


def response_options(args):
    """The :class:`~sri_jax.data.attacks.ResponseOptions` of :func:`response_flags`; a flag
    whose attack is not in ``--attacks`` is a usage error."""
    from ..data.attacks import ResponseOptions

    attacks = set(args.attacks.split(","))
    for flag, value, needs in (("--prefix-tokens", args.prefix_tokens, ("prefill", "infill")),
                               ("--prefix-source", args.prefix_source, ("prefill",)),
                               ("--infill", args.infill, ("infill",))):
        if value is not None and not attacks & set(needs):
            raise UsageError(f"{flag} applies to the {' and '.join(needs)} attack"
                             f"{'s' if len(needs) > 1 else ''}; add {' or '.join(needs)} to "
                             f"--attacks or leave {flag} out")
    kw = {"prefix_tokens": args.prefix_tokens, "prefix_source": args.prefix_source}
    if args.infill is not None:
        kw["infill_steps"], kw["infill_slots"] = args.infill
    return ResponseOptions(**{k: v for k, v in kw.items() if v is not None})


def names(registry) -> str:
    return ", ".join(sorted(registry))


def prompts_help(what: str) -> str:
    from ..data.sets import PROMPT_SETS

    return (f"{what}: a registered set ({names(PROMPT_SETS)}) or a .txt (one per line), "
            ".jsonl, .json, .csv, .tsv or .parquet file")


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)


def training_run_flags(p: argparse.ArgumentParser, *, base: str, out: str, help: dict):
    """--base, --out (their defaults), --checkpoint-dir, --no-resume and --overwrite of a
    training command; ``help``: the text of each (keys: the flags without dashes)."""
    p.add_argument("--base", default=base, help=help["base"])
    p.add_argument("--out", default=out, help=help["out"])
    p.add_argument("--checkpoint-dir", help=help["checkpoint-dir"])
    p.add_argument("--no-resume", action="store_true", help=help["no-resume"])
    p.add_argument("--overwrite", action="store_true", help=help["overwrite"])


def training_flags(p: argparse.ArgumentParser, d, alpha=finite_float()):
    """The trainer's flags, with the defaults of ``d`` (a
    :class:`sri_jax.finetune.FinetuneConfig`); ``alpha``: the --alpha type."""
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=POSITIVE, default=d.epochs)
    p.add_argument("--lr", type=finite_float(0, lo_open=True), default=d.learning_rate)
    p.add_argument("--batch-size", type=POSITIVE, default=d.batch_size)
    p.add_argument("--rank", type=POSITIVE, default=d.lora.rank)
    p.add_argument("--alpha", type=alpha, default=d.lora.alpha)


def training_config(args, d, **lora):
    """``d`` (a FinetuneConfig) with the values of :func:`training_flags` (``lora``: more
    LoraConfig fields)."""
    import dataclasses

    from ..models.lora import LoraConfig

    return dataclasses.replace(
        d, lora=LoraConfig(rank=args.rank, alpha=args.alpha, **lora), learning_rate=args.lr,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)


def sampler_flags(p: argparse.ArgumentParser):
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
    g.add_argument("--layer", type=layer_index,
                   help="SRI layer: last (default), middle, first or an index")
    g.add_argument("--pooling", choices=["all", "committed"],
                   help="diffusion pooling: all response positions (default) or committed only")
    g.add_argument("--tau", type=finite_float(0, lo_open=True),
                   help="SRI sigmoid temperature (default 0.1)")


def overwrite_flag(p: argparse.ArgumentParser, kind: str):
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace the {kind} already in --out (only a {kind}; any other "
                        "non-empty folder is refused)")


def trust_flag(p: argparse.ArgumentParser):
    p.add_argument("--trust-centers", action="store_true",
                   help="use centers whose metadata cannot be verified (no meta.json, no "
                        "weight hash or sampler config); their SRI may mean nothing")


def model_flags(p: argparse.ArgumentParser, default_model=True):
    from ..weights.registry import REGISTRY

    p.add_argument("--model", default=DEMO_MODEL if default_model else None,
                   help=f"a registered model ({names(REGISTRY)}), a hub id, an HF directory "
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


def scale_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("scale-out (TPU pods, multi-GPU; see docs/scaling.md)")
    g.add_argument("--mesh-data", type=int, help="data-parallel mesh axis size (-1: the rest)")
    g.add_argument("--mesh-model", type=int, help="tensor-parallel mesh axis size (default 1)")
    g.add_argument("--distributed", action="store_true",
                   help="join a jax.distributed process group (auto-detected on Cloud TPU, "
                        "SLURM, ...) and shard over every device of every process")
    g.add_argument("--coordinator", help="HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=POSITIVE, help="processes in the group")
    g.add_argument("--process-id", type=NON_NEGATIVE, help="this process's index (0-based)")


# SamplerConfig fields with a flag of the same name (--gen-length -> gen_length)
SAMPLER_KEYS = ("mode", "gen_length", "steps", "block_length", "temperature", "remasking",
                "cfg_scale", "cfg_pool", "top_p", "top_k", "layer", "pooling", "tau")


def sampler(args, model):
    """The sampler config: the model kind's defaults and the flags given; a flag the model's
    sampler would ignore (e.g. --steps on an AR model) is a usage error."""
    from ..sampling.config import SamplerConfig, inapplicable_sampler_options

    over = {k: getattr(args, k) for k in SAMPLER_KEYS if getattr(args, k, None) is not None}
    bad, why = inapplicable_sampler_options(model, over)
    if bad:
        flags = ", ".join(f"--{k.replace('_', '-')}" + (f" {over[k]}" if k == "mode" else "")
                          for k in bad)
        raise UsageError(f"{flags}: not used for {model.name or 'this model'}, {why}; leave "
                         f"{'it' if len(bad) == 1 else 'them'} out")
    try:
        return SamplerConfig.for_model(model, **over)
    except ValueError as e:
        raise UsageError(f"{e}") from None


def load(args, mesh=None):
    from ..weights.loader import load_model

    kw = {} if mesh is None else {"mesh": mesh}
    model = load_model(args.model, dtype=args.dtype, **kw)
    if getattr(args, "no_system_prompt", False):
        model.system_prompt = None
    model.safe_prompts = prompt_encoding(args) == "safe"
    return model


def prompt_encoding(args) -> str:
    """--prompt-encoding, else safe for prompts read from sets/files, raw for typed ones."""
    typed = args.command == "generate" and not getattr(args, "prompts_file", None)
    return getattr(args, "prompt_encoding", None) or ("raw" if typed else "safe")


def mesh(args):
    """Join jax.distributed when asked (before anything touches a device), then build the
    mesh from --mesh-data/--mesh-model (default under --distributed: all devices on data)."""
    dist = bool(args.distributed or args.coordinator or args.num_processes is not None
                or args.process_id is not None)
    if dist:
        from ..parallel import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    if args.mesh_data is None and args.mesh_model is None and not dist:
        return None
    from ..parallel import make_mesh

    return make_mesh(data=-1 if args.mesh_data is None else args.mesh_data,
                     model=1 if args.mesh_model is None else args.mesh_model)


def is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


def prompts(name, limit=None, field=None):
    from ..data import load_prompt_set

    ps = load_prompt_set(name, field=field) if field else load_prompt_set(name)
    if limit is not None:
        ps = ps.head(limit)
    return ps
