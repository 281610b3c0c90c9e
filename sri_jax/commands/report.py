"""``sri-jax report``: the summary table of trace folders."""

from __future__ import annotations

import json

HELP = "summary table (refusal rate, IRR, sigma) of traces"
DESCRIPTION = ("Summary table of trace folders. A run that is not complete (killed, or still "
               "running) is reported with a warning and marked partial, n/planned; a folder "
               "given twice is read once; runs of different generation lengths form separate "
               "groups, name [T=...].")


def add_arguments(p) -> None:
    p.add_argument("traces", nargs="+", help="trace folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from ..reporting import format_table, groups_from_traces, summarize

    rows = summarize(groups_from_traces(args.traces))
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
