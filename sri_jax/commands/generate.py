"""``sri-jax generate``: generate for prompts and print the texts (and SRI)."""

from __future__ import annotations

from . import args as A

HELP = "generate for prompts and print texts (and SRI)"


def add_arguments(p) -> None:
    A.model_flags(p)
    A.sampler_flags(p)
    p.add_argument("prompts", nargs="*")
    p.add_argument("--prompts-file", help="also generate for the prompts of this file or "
                                          "prompt set (encoded safely unless "
                                          "--prompt-encoding raw)")
    p.add_argument("--centers", help="centers folder: also print the SRI trace")
    A.trust_flag(p)
    A.scale_flags(p)


def run(args) -> int:
    from ..sampling import generate
    from ..sri.centers import load_centers

    centers = load_centers(args.centers, allow_unverified=args.trust_centers) \
        if args.centers else None
    mesh = A.mesh(args)
    model = A.load(args, mesh)
    cfg = A.sampler(args, model)
    prompts = list(args.prompts) + (list(A.prompts(args.prompts_file).prompts)
                                    if args.prompts_file else [])
    if not prompts:
        raise ValueError("no prompts: give them as arguments or with --prompts-file FILE")
    res = generate(model, prompts, cfg, centers=centers, seed=args.seed)
    if not A.is_main_process():
        return 0
    shown = model.decode(res.tokens, stop_at_eos=True)  # up to EOS; judges read res.texts
    for i, (p, t) in enumerate(zip(prompts, shown)):
        print(f"[{i}] {p}\n--> {t}")
        if res.sri is not None:
            print("    sri: " + " ".join(f"{s:.2f}" for s in res.sri[i]))
    return 0
