"""Summaries of traced runs: the groups of trace folders, one row per group (refusal rate,
IRR at each lambda_r, sigma), the text table; figures in :mod:`sri_jax.reporting.figures`."""

from __future__ import annotations

import os
import warnings
from typing import Mapping, Sequence

import numpy as np

from ..sri.signal import internal_recovery_rate

LAMBDA_R = (0.5, 0.3, 0.1)


def summarize(groups: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict]:
    """One row per group: n, planned (records the runs' plans hold; None when unknown),
    partial (some run not complete), refusal rate, IRR at each lambda_r, mean and final
    sigma."""
    rows = []
    for name, g in groups.items():
        sri, refused = np.asarray(g["sri"]), np.asarray(g["refused"], bool)
        row = {"group": name, "n": int(len(sri)), "planned": g.get("planned", int(len(sri))),
               "partial": bool(g.get("partial", False)),
               "refusal_rate": float(refused.mean()),
               "mean_sigma": float(sri.mean()), "final_sigma": float(sri[:, -1].mean())}
        for lam in LAMBDA_R:
            row[f"irr@{lam}"] = internal_recovery_rate(sri, 0.5, lam)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    cols = ["group", "n", "refusal_rate"] + [f"irr@{lam}" for lam in LAMBDA_R] + [
        "mean_sigma", "final_sigma"]
    head = ["set / attack", "n", "refusal", "IRR@.5", "IRR@.3", "IRR@.1", "mean sigma",
            "final sigma"]
    body = [[r["group"] + (" [partial]" if r.get("partial") else ""),
             f"{r['n']}/{r.get('planned') or '?'}" if r.get("partial") else str(r["n"])]
            + [f"{r[c]:.3f}" for c in cols[2:]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def groups_from_traces(trace_dirs: Sequence) -> dict:
    """Read trace directories into {"set/attack": {"sri", "refused", "planned", "partial"}}
    groups, warning (``warnings.warn``) about what would otherwise skew the numbers silently:

    * a folder given more than once (same resolved path) is read once;
    * a run that is not complete (killed or still running: no manifest, or fewer records
      than its manifest) is read, its group marked ``partial``; ``planned`` is the records
      the runs' plans hold (None when a plan predates record counts);
    * runs of different generation lengths form separate groups, ``"name [T=...]"``.
    """
    from ..parallel.storage import is_url
    from ..tracing import read_traces, run_status

    seen: dict = {}
    groups: dict = {}  # (name, T) -> lists
    for d in trace_dirs:
        key = str(d).rstrip("/") if is_url(str(d)) else os.path.realpath(os.path.expanduser(d))
        if key in seen:
            warnings.warn(f"{seen[key]} is given more than once; reading it once", stacklevel=2)
            continue
        seen[key] = d
        rec, st = read_traces(d), run_status(d)
        n = len(rec["sri"])
        partial = not st["complete"] or st["planned"] != n
        if partial:
            of = f"{n} of {st['planned']} records" if st["planned"] else f"{n} records"
            warnings.warn(f"{d} is a partial run ({of}, {st['shards']} of "
                          f"{st['planned_shards'] or '?'} shards): its numbers cover only these "
                          "records; rerun its trace command to finish it", stacklevel=2)
        for s, a, sig, ref in zip(rec["set"], rec["attack"], rec["sri"], rec["refused"]):
            g = groups.setdefault((f"{s}/{a}" if a != "none" else s, len(sig)),
                                  {"sri": [], "refused": [], "runs": {}})
            g["sri"].append(sig)
            g["refused"].append(ref)
            g["runs"][key] = (st["planned"], partial)
    lengths: dict = {}
    for name, t in groups:
        lengths.setdefault(name, set()).add(t)
    out = {}
    for (name, t), v in groups.items():
        planned = [p for p, _ in v["runs"].values()]
        out[name if len(lengths[name]) == 1 else f"{name} [T={t}]"] = {
            "sri": np.asarray(v["sri"]), "refused": np.asarray(v["refused"]),
            "planned": None if None in planned else sum(planned),
            "partial": any(p for _, p in v["runs"].values())}
    return out
