"""``sri-jax trace``: trace a prompt set (optionally attacked) to Parquet."""

from __future__ import annotations

from . import args as A

HELP = "trace a prompt set (optionally attacked) to Parquet"


def add_arguments(p) -> None:
    from ..data.attacks import ATTACKS

    A.model_flags(p)
    A.sampler_flags(p)
    p.add_argument("--centers", required=True, help="centers folder from `calibrate`")
    A.trust_flag(p)
    p.add_argument("--prompts", required=True, help=A.prompts_help("the prompts"))
    p.add_argument("--field", help="column holding the prompt (local files)")
    p.add_argument("--limit", type=A.POSITIVE, help="first N prompts only")
    p.add_argument("--attack", default="none", choices=sorted(ATTACKS), metavar="ATTACK",
                   help=f"jailbreak transform to apply: {A.names(ATTACKS)} (default none)")
    p.add_argument("--prefix-tokens", type=A.POSITIVE,
                   help="--attack prefill: force only the first N tokens of each prefix")
    p.add_argument("--prefix-source", choices=["auto", "derived", "generic"],
                   help="--attack prefill: the set's own target column when it has one, else "
                        "'Sure, here is how to <request>' (auto, default); always that "
                        "(derived); or 'Sure, here is' (generic)")
    p.add_argument("--save-activations", action="store_true",
                   help="also store the pooled phi [T, D] per record")
    p.add_argument("--out", required=True, help="trace folder or gs:// URL (rerun to resume; "
                                                "one trace process per folder at a time)")
    A.scale_flags(p)


def run(args) -> int:
    from ..data.attacks import ResponseOptions, attack_inputs
    from ..sri.centers import load_centers
    from ..sampling.api import Prompting
    from ..tracing import TraceOptions, trace

    if args.attack != "prefill" and (args.prefix_tokens is not None
                                     or args.prefix_source is not None):
        raise A.UsageError("--prefix-tokens and --prefix-source belong to --attack prefill")
    mesh = A.mesh(args)
    centers = load_centers(args.centers, allow_unverified=args.trust_centers)
    ps = A.prompts(args.prompts, args.limit, args.field)
    model = A.load(args, mesh)
    cfg = A.sampler(args, model)
    response = ResponseOptions(prefix_tokens=args.prefix_tokens,
                               prefix_source=args.prefix_source or "auto")
    prompts, kw = attack_inputs(args.attack, ps, model.config.causal, seed=args.seed,
                                response=response)
    out = trace(model, prompts, cfg, centers=centers, out_dir=args.out, ids=list(ps.ids),
                prompting=Prompting(**kw),
                options=TraceOptions(set_name=ps.name, attack=args.attack,
                                     batch_size=args.batch_size, seed=args.seed,
                                     save_activations=args.save_activations,
                                     progress=not args.no_progress))
    print(f"traces in {out}")
    return 0
