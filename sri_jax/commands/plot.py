"""``sri-jax plot``: figures from trace folders."""

from __future__ import annotations

from . import args as A

HELP = "figures from trace folders"


def add_arguments(p) -> None:
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--centers", help="centers folder (adds the reference curves)")
    A.trust_flag(p)
    p.add_argument("--out", default="figures")


def run(args) -> int:
    from ..reporting import groups_from_traces
    from ..reporting.figures import make_figures
    from ..sri.centers import load_centers

    groups = groups_from_traces(args.traces)
    centers = load_centers(args.centers, allow_unverified=args.trust_centers) \
        if args.centers else None
    for p in make_figures(groups, args.out, centers=centers):
        print(p)
    return 0
