"""Overheads of the defenses, measured on the same harness and prompts.

Every variant runs once untimed (compilation), then ``repeats`` times interleaved (the order
rotating each round); the FASTEST round is used (the least disturbed by other load on a
shared machine, as ``timeit`` recommends). :func:`generation_timing` times ``generate`` plain,
with centers (the SRI signal) and with centers and the guard in the loop, and the guard's own
compute: the same jitted forward scoring the same traces (fastest of at least three).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Optional

import numpy as np


def min_times(fns: Mapping[str, Callable], repeats: int,
              rounds: Optional[dict] = None) -> dict:
    """Each fn once untimed, then ``repeats`` interleaved timed rounds; the fastest round per
    fn. ``rounds`` (a dict) receives every time."""
    names = list(fns)
    for n in names:
        fns[n]()
    times = {n: [] for n in names}
    for r in range(max(1, repeats)):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    if rounds is not None:
        rounds.update(times)
    return {n: float(np.min(v)) for n, v in times.items()}


def pct(t_defense: float, t_gen: float) -> float:
    return 100.0 * t_defense / t_gen


def timing_prompts(benign_test, harmful: Mapping, n: int) -> list:
    """Up to ``n`` prompts, round-robin from the benign test set and each attack set."""
    pools = [list(benign_test)] + [list(v) for v in harmful.values()]
    out, i = [], 0
    while len(out) < n and any(i < len(p) for p in pools):
        out += [p[i] for p in pools if i < len(p)]
        i += 1
    return out[:n]


def generation_timing(model, centers, cfg, guard, prompts, *, batch_size: int, repeats: int,
                      seed: int = 0) -> tuple[dict, list]:
    """``(timing, responses)``: the generation times and overheads (keys as in the report's
    ``baselines["timing"]``) and the responses of the run with the guard in the loop."""
    from ..sampling.api import generate_batched

    last = {}

    def gen(name, **kw):
        def run():  # keeps each variant's own last result (the rounds rotate their order)
            last[name] = generate_batched(model, prompts, cfg, batch_size=batch_size,
                                          progress=False, seed=seed, **kw)
        return run

    rounds: dict = {}
    tg = min_times({"plain": gen("plain"), "sri": gen("sri", centers=centers),
                    "sri_guard": gen("sri_guard", centers=centers, detector=guard)}, repeats,
                   rounds)
    traces = last["sri_guard"].sri
    t_score = min_times({"s": lambda: guard.score_samples(traces)}, max(3, repeats))["s"]
    t_plain = tg["plain"]
    timing = {"n_prompts": len(prompts), "repeats": repeats, "t_plain_s": t_plain,
              "t_sri_s": tg["sri"], "t_sri_guard_s": tg["sri_guard"],
              "sri_guard_overhead_pct_raw": pct(tg["sri_guard"] - t_plain, t_plain),
              "detector_only_overhead_pct_raw": pct(tg["sri_guard"] - tg["sri"], t_plain),
              "sri_signal_overhead_pct_raw": pct(tg["sri"] - t_plain, t_plain),
              "offline_scoring_s": t_score, "offline_scoring_pct": pct(t_score, t_plain),
              "rounds_s": rounds,
              # run-to-run spread of the same call: differences below it are timing noise
              "noise_pct": max(pct(max(v) - min(v), min(v)) for v in rounds.values())}
    return timing, list(last["sri_guard"].texts)
