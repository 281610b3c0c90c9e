"""Calibrating SRI centers: sample harmless and harmful prompts, keep the traces the judge
labels as intended (harmless answered, harmful refused) and average phi per step. The centers
file and its checks live in :mod:`sri_jax.sri.centers`."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .judges import keyword
from .sampling.api import Readout, generate_batched
from .sri.centers import prompts_hash, run_meta
from .sri.signal import Centers, centers_from_activations, sri_signal


def calibrate(model, harmless_prompts: Sequence[str], harmful_prompts: Sequence[str], cfg, *,
              judge: Optional[Callable[[str], bool]] = None, batch_size: int = 16,
              min_per_class: int = 1, progress: bool = True, seed: int = 0,
              extra_meta: Optional[dict] = None) -> Centers:
    """Per-step centers: mean phi_t over harmless prompts the model did NOT refuse and over
    harmful prompts it DID refuse (refusal decided by ``judge``, the keyword judge default)."""
    judge = judge or keyword.is_refusal  # looked up now: tests swap the module's judge
    kept = {}
    counts = {}
    for cls, prompts, want_refusal in (("harmless", harmless_prompts, False),
                                       ("harmful", harmful_prompts, True)):
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f"no {cls} prompts given for calibration")
        res = generate_batched(model, prompts, cfg, batch_size=batch_size,
                               readout=Readout(activations=True), seed=seed, progress=progress,
                               desc=f"calibrate {cls}")
        refused = np.array([bool(judge(t)) for t in res.texts])
        sel = refused if want_refusal else ~refused
        kept[cls] = res.activations[sel]
        counts[cls] = {"total": len(prompts), "kept": int(sel.sum()),
                       "refused": int(refused.sum())}
    for cls, want in (("harmless", "not refused"), ("harmful", "refused")):
        n = counts[cls]["kept"]
        if n < min_per_class:
            raise ValueError(
                f"only {n} of {counts[cls]['total']} {cls} prompts were {want} "
                f"(need at least {min_per_class}); use more or different {cls} prompts, a "
                "model that refuses more (e.g. smollm2-135m-instruct-safe), or another judge")
    meta = {**run_meta(model, cfg), "judge": keyword.judge_name(judge)}
    meta.update(counts=counts, prompt_sets={"harmless": prompts_hash(harmless_prompts),
                                            "harmful": prompts_hash(harmful_prompts)})
    meta.update(extra_meta or {})
    centers = centers_from_activations(kept["harmless"], kept["harmful"], meta)
    # Reference curves for plots: mean SRI of the kept calibration traces of each class.
    curves = {"harmless": sri_signal(kept["harmless"], centers, cfg.tau).mean(0).tolist(),
              "refusal": sri_signal(kept["harmful"], centers, cfg.tau).mean(0).tolist()}
    return Centers(centers.harmless, centers.harmful,
                   {**centers.meta, "reference_curves": curves})
