"""The SRI Guard evaluation (paper section on the detector, Table 13 and ablations).

:func:`evaluate_guard` traces every prompt set ONCE with the given centers
(:func:`sri_jax.detector.protocol.trace_set`), fits the one-class :class:`SRIGuard` on the
benign training traces, thresholds it on the benign hold-out and scores the benign test set
and every attack set (:func:`sri_jax.detector.protocol.fit_and_score_guard`). Its options are
one :class:`EvalConfig`. Optional parts (each flagged, since each costs time):

* ``classifier``: a SUPERVISED :class:`SRIClassifier` per held-out attack, leave-one-attack-out
  (:func:`sri_jax.detector.protocol.leave_one_attack_out`).
* ``ablations``: "first_step" and "text", and ``layers`` (:mod:`sri_jax.detector.ablations`).
* ``baselines``: "perplexity" (prompt perplexity filter), "self_exam" (the model asked whether
  its response is harmful) and any ``external_guards`` (e.g. :class:`LlamaGuard3`), compared
  with the undefended model and the SRI Guard like the paper's Table 13: overhead % of
  generation time, false positives % (benign test refused or flagged), jailbreak refusal %
  (attack prompts refused or flagged; mean over the jailbreak sets, i.e. every set but the raw
  harmful "none" one when there are others) and, with a ``harm_judge``, attack success %
  (successful rows neither refused nor flagged).

Attack sets may force the response (``prompting``: prefill prefixes, infill templates; see
:func:`sri_jax.data.attacks.attack_inputs`); they are traced with them and evaluated like any
other jailbreak set. With a ``harm_judge`` (:class:`sri_jax.judges.harm.HarmJudge` or any
``(requests, responses) -> bool[N]``), every attack set's responses that were not refused are
judged against the raw requests (``harmful["none"]``): success = not refused AND harmful,
reported per set next to the keyword "not refused" rate, and the guard is also scored on the
successful jailbreaks alone (``EvalReport.attack_success``).

Overheads (:mod:`sri_jax.detector.timing`) are measured on ``n_timing`` prompts drawn from the
benign test and attack sets. Two SRI Guard rows: ``sri_guard`` = the detector's own compute
(the guard scoring the traces, fastest of at least three) / generation: the detector runs
once per trace, so its cost is a few microseconds, far below what two wall-clock runs of a
whole generation can resolve; the wall-clock difference of ``generate(..., centers,
detector=guard)`` vs the same call without the detector is kept next to it
(``in_loop_overhead_pct_raw``) with the round-to-round spread of the same call
(``noise_pct``). ``sri_guard+signal`` = ``generate`` with centers and the detector vs
``generate`` without centers, wall clock (signal + detector). Differences below the timing
noise can come out negative; ``overhead_pct`` clips at 0, the raw values are kept.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ..judges.keyword import is_refusal
from . import ablations as abl
from .baselines import PerplexityFilter, SelfExamination, as_detector
from .metrics import evaluate_scores
from .protocol import (Traced, check_prompting, check_same_requests, fit_and_score_guard,
                       jailbreak_sets, judge_success, leave_one_attack_out, step_texts,
                       success_metrics, trace_set)
from .report import EvalReport, defense_row
from .timing import generation_timing, min_times, pct, timing_prompts

__all__ = ["ABLATIONS", "BASELINES", "EvalConfig", "EvalReport", "evaluate_guard",
           "step_texts"]

ABLATIONS = ("first_step", "text")
BASELINES = ("perplexity", "self_exam")
#: The harm judge's score cache in ``trace_dir`` (:class:`sri_jax.judges.harm.ScoreCache`).
HARM_SCORES = "harm_scores.json"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The options of :func:`evaluate_guard`.

    ``judge``: text -> refused? (refusal rates and, for ``layers``, center calibration).
    ``guard_kwargs``: SRIGuard options (hidden, epochs, quantile, ...), also used for the
    ablation autoencoders; ``classifier_kwargs``: the supervised baseline's (default: the
    guard's without ``quantile``). ``ablations``: subset of ("first_step", "text");
    ``layers``: other SRI layers ("middle", "first", an index) to recalibrate and retrace
    (roughly one more full run each). ``step_judge``: the per-step refusal indicator of the
    "text" ablation (keyword judge). ``baselines``: subset of ("perplexity", "self_exam");
    ``external_guards``: name -> ``(prompts, responses) -> bool[N]`` (e.g.
    ``{"llama_guard": LlamaGuard3("1b")}``). ``ppl_quantile``: the perplexity filter's
    benign-holdout quantile (0.99 or 0.95). ``n_timing`` / ``timing_repeats``: prompts and
    timed rounds for the overhead columns. ``trace_dir``: where every set's traces go
    (``<set>/`` Parquet shards, ``layer_<layer>/<set>/`` and ``layer_<layer>/centers`` for
    the layer ablation); rerunning with the same folder reuses what is on disk, so an
    interrupted evaluation resumes. Default: a temporary folder. ``harm_judge``:
    ``(requests, responses) -> bool[N]`` (e.g. :class:`sri_jax.judges.harm.HarmJudge`),
    attack success = not refused AND judged harmful; None: not measured. A judge with
    ``score`` keeps its scores in ``trace_dir/harm_scores.json``: a rerun only judges new
    pairs.
    """

    batch_size: int = 32
    judge: Callable[[str], bool] = is_refusal
    step_judge: Callable[[str], bool] = is_refusal
    guard_kwargs: Optional[Mapping] = None
    classifier: bool = True
    classifier_kwargs: Optional[Mapping] = None
    ablations: Sequence[str] = ABLATIONS
    layers: Sequence = ()
    baselines: Sequence[str] = BASELINES
    external_guards: Optional[Mapping[str, Callable]] = None
    ppl_quantile: float = 0.99
    n_timing: int = 16
    timing_repeats: int = 2
    self_exam_tokens: int = 8
    seed: int = 0
    progress: bool = True
    log: Callable = print
    trace_dir: Optional[object] = None
    harm_judge: Optional[Callable] = None

    def __post_init__(self):
        for name, allowed, extra in (("ablations", ABLATIONS, ""), ("baselines", BASELINES,
                                     " (external guards go in external_guards=)")):
            given = tuple(getattr(self, name) or ())
            object.__setattr__(self, name, given)
            unknown = sorted(set(given) - set(allowed))
            if unknown:
                singular = name[:-1]
                raise ValueError(f"unknown {singular}(s) {unknown}; choose from {allowed}{extra}")
        object.__setattr__(self, "layers", tuple(self.layers or ()))

    def say(self, *args) -> None:
        """``log`` when ``progress`` is on."""
        if self.progress:
            self.log(*args)


def _check_inputs(model, cfg, sets: Mapping[str, list], harmful: Mapping[str, list],
                  prompting: Mapping[str, dict], calibration, c: EvalConfig) -> list:
    """Every check that can fail before anything is traced; returns the other layers."""
    if not harmful:
        raise ValueError("harmful is empty: pass {'none': raw_harmful_prompts, attack: ...}")
    for name, ps in list(sets.items()) + list(harmful.items()):
        if not ps:
            raise ValueError(f"prompt set {name!r} is empty")
    check_prompting(model, cfg, harmful, prompting)
    if c.harm_judge is not None:
        if "none" not in harmful:
            raise ValueError("the harm judge reads the original requests: include the raw "
                             "harmful prompts as harmful['none']")
        check_same_requests(len(harmful["none"]), {a: len(p) for a, p in harmful.items()})
    layers = [l for l in c.layers if l != cfg.layer]
    if layers and calibration is None:
        raise ValueError("the layer ablation recalibrates the centers per layer: pass "
                         "calibration=(harmless_prompts, harmful_prompts)")
    return layers


def evaluate_guard(model, centers, cfg, *, benign_train: Sequence[str],
                   benign_holdout: Sequence[str], benign_test: Sequence[str],
                   harmful: Mapping[str, Sequence[str]], calibration: Optional[tuple] = None,
                   prompting: Optional[Mapping[str, Mapping]] = None,
                   config: Optional[EvalConfig] = None, **options) -> EvalReport:
    """Run the SRI Guard evaluation (module docstring) and return an :class:`EvalReport`
    (its ``guard_`` is the fitted guard).

    ``harmful``: attack name -> attacked prompts, including "none" for the raw harmful prompts.
    ``calibration``: ``(harmless_prompts, harmful_prompts)`` for the layer ablation.
    ``prompting``: attack name -> ``Prompting`` fields of a response-side attack
    (``{"prefix": [...]}`` or ``{"template": [...]}``, one per prompt; ``attack_inputs``).
    ``config``: an :class:`EvalConfig`; ``options``: its fields, over ``config``.
    """
    from ..tracing import TraceOptions

    c = dataclasses.replace(config or EvalConfig(), **options)
    t_start = time.perf_counter()
    harmful = {str(k): list(v) for k, v in harmful.items()}
    sets = {"benign_train": list(benign_train), "benign_holdout": list(benign_holdout),
            "benign_test": list(benign_test)}
    prompting = {str(k): dict(v) for k, v in dict(prompting or {}).items()}
    layers = _check_inputs(model, cfg, sets, harmful, prompting, calibration, c)
    all_sets = {**sets, **{f"attack:{a}": p for a, p in harmful.items()}}
    with tempfile.TemporaryDirectory(prefix="sri_jax_eval_") as tmp:
        root = Path(c.trace_dir if c.trace_dir is not None else tmp)

        def trace_sets(cfg_, centers_, root_, tag="", record=False):
            return {name: trace_set(model, ps, cfg_, centers_,
                                    out_dir=Path(root_) / name.replace(":", "__"),
                                    judge=c.judge, step_judge=c.step_judge, record=record,
                                    prompting=prompting.get(name[len("attack:"):]),
                                    options=TraceOptions(set_name=f"{tag}{name}",
                                                         batch_size=c.batch_size,
                                                         seed=c.seed, progress=c.progress))
                    for name, ps in all_sets.items()}

        traced = trace_sets(cfg, centers, root, record=True)
        atk = {a: traced[f"attack:{a}"] for a in harmful}
        tr, ho, te = traced["benign_train"], traced["benign_holdout"], traced["benign_test"]
        g = fit_and_score_guard(tr.sri, ho.sri, (te.sri, te.refused),
                                {a: (t.sri, t.refused) for a, t in atk.items()},
                                centers=centers, guard_kwargs=dict(c.guard_kwargs or {}))
        success, judged = (judge_success(c.harm_judge, harmful["none"], atk,
                                         cache=_harm_cache(c))
                           if c.harm_judge is not None else (None, None))
        supervised = _supervised(tr, te, atk, c)
        ablation = _ablations(model, cfg, g, traced, atk, layers, calibration, root, c,
                              trace_sets)
    base = _defenses(model, centers, cfg, g, sets, harmful, traced, c, success)
    meta = _meta(model, cfg, centers, sets, harmful, prompting, c,
                 trace_s=sum(t.seconds for t in traced.values()),
                 total_s=time.perf_counter() - t_start)
    return EvalReport(meta=meta, guard=_guard_info(g.guard), benign=g.benign,
                      attacks=g.attacks, means=g.means, supervised=supervised,
                      ablations=ablation, baselines=base, scores=_scores(g), guard_=g.guard,
                      attack_success=None if success is None else success_metrics(
                          success, atk, g, c.harm_judge, judged))


def _harm_cache(c: EvalConfig) -> Optional[Path]:
    """The harm judge's score file, kept with the traces (none in a temporary folder)."""
    return None if c.trace_dir is None else Path(c.trace_dir) / HARM_SCORES


def _supervised(tr: Traced, te: Traced, atk: Mapping[str, Traced], c: EvalConfig):
    if not c.classifier or len(atk) < 2:
        return None
    kw = c.classifier_kwargs or {k: v for k, v in dict(c.guard_kwargs or {}).items()
                                 if k != "quantile"}
    return leave_one_attack_out(tr.sri, te.sri, {a: t.sri for a, t in atk.items()}, dict(kw))


def _ablations(model, cfg, g, traced, atk, layers, calibration, root, c, trace_sets) -> dict:
    """The guard's own signal first, then each ablation's AUROC per attack."""
    gkw = dict(c.guard_kwargs or {})
    out = {f"sri_{cfg.layer}": {"per_attack": {a: g.attacks[a]["auroc"] for a in atk},
                                "mean_auroc": g.means["all"]["auroc"]}}
    sets = (traced["benign_train"], traced["benign_holdout"], traced["benign_test"], atk)
    if "first_step" in c.ablations:
        out["first_step"] = abl.first_step_ablation(*sets, gkw)
    if "text" in c.ablations:
        out["text"] = abl.text_ablation(*sets, gkw)
    for layer in layers:
        out[f"sri_{layer}"] = abl.layer_ablation(model, cfg, layer, calibration,
                                                 root / f"layer_{layer}", c, trace_sets)
    return out


def _defenses(model, centers, cfg, g, sets, harmful, traced: Mapping[str, Traced],
              c: EvalConfig, success: Optional[Mapping] = None) -> dict:
    """Table 13: the undefended model, each baseline defense and the SRI Guard, with the
    generation timing the overheads are relative to."""
    tp = timing_prompts(sets["benign_test"], harmful, max(1, c.n_timing))
    c.say(f"timing generation on {len(tp)} prompts ({c.timing_repeats} rounds)")
    timing, responses = generation_timing(model, centers, cfg, g.guard, tp,
                                          batch_size=c.batch_size, repeats=c.timing_repeats,
                                          seed=c.seed)
    jb = jailbreak_sets(harmful)
    te, ho = traced["benign_test"], traced["benign_holdout"]
    atk = {a: traced[f"attack:{a}"] for a in harmful}
    refused = {a: t.refused for a, t in atk.items()}

    def row(overhead, flags_b, flags_a, extra=None):
        return defense_row(overhead, te.refused, flags_b, refused, flags_a, jb, extra,
                           success=success)

    table = {"undefended": row(0.0, np.zeros(len(te.refused), bool),
                               {a: np.zeros(len(t.refused), bool) for a, t in atk.items()})}
    details = {}
    for name, det in _baseline_detectors(model, c).items():
        c.say(f"baseline: {name}")
        det.fit(sets["benign_holdout"], ho.texts)
        s_b = det.score_samples(sets["benign_test"], te.texts)
        s_a = {a: det.score_samples(harmful[a], atk[a].texts) for a in harmful}
        t = min_times({name: lambda: det.score_samples(tp, responses)}, c.timing_repeats)[name]
        thr = det.threshold_
        extra = {"threshold": thr, **{k: v for k, v in det.get_params(deep=False).items()
                                      if k == "quantile"}, "time_s": t}
        table[name] = row(pct(t, timing["t_plain_s"]), s_b > thr,
                          {a: s > thr for a, s in s_a.items()}, extra)
        details[name] = {**({"benign_holdout": det.benign_scores_.tolist()}
                            if hasattr(det, "benign_scores_") else {}),
                         "benign_test": s_b.tolist(),
                         "attacks": {a: s.tolist() for a, s in s_a.items()},
                         "auroc": {a: evaluate_scores(s_b, s, thr)["auroc"]
                                   for a, s in s_a.items()}}
    table.update(_guard_rows(g, timing, row))
    return {"table13": table, "timing": timing, "details": details, "jailbreak_sets": jb}


def _baseline_detectors(model, c: EvalConfig) -> dict:
    """The baseline defenses, in table order, behind one interface (``TextDetector``)."""
    dets = {}
    if "perplexity" in c.baselines:
        dets["perplexity"] = PerplexityFilter(model, quantile=c.ppl_quantile,
                                              batch_size=c.batch_size)
    if "self_exam" in c.baselines:
        dets["self_exam"] = SelfExamination(model, max_new_tokens=c.self_exam_tokens,
                                            batch_size=c.batch_size)
    dets.update({k: as_detector(v) for k, v in dict(c.external_guards or {}).items()})
    return dets


def _guard_rows(g, timing: dict, row) -> dict:
    raw = timing["sri_guard_overhead_pct_raw"]
    return {
        "sri_guard": row(timing["offline_scoring_pct"], g.flags_benign, g.flags_attack, {
            "in_loop_overhead_pct_raw": timing["detector_only_overhead_pct_raw"],
            "noise_pct": timing["noise_pct"],
            "vs": "the detector's own compute (the same jitted MLP on the same traces, "
                  "fastest round) / generation; in_loop_overhead_pct_raw = generate with "
                  "centers and the detector vs without the detector, wall clock"}),
        "sri_guard+signal": row(raw, g.flags_benign, g.flags_attack,
                                {"overhead_pct_raw": raw, "vs": "generate without centers"})}


def _meta(model, cfg, centers, sets, harmful, prompting, c: EvalConfig, *, trace_s,
          total_s) -> dict:
    return {"model": getattr(model, "name", ""),
            "weight_hash": getattr(model, "weight_hash", ""),
            "sampler": cfg.to_dict(), "steps": cfg.steps, "layer": cfg.layer,
            "attacks": list(harmful), "jailbreak_sets": jailbreak_sets(harmful),
            "forced_response": {a: sorted(k for k in kw if k != "prefix_tokens")
                                for a, kw in prompting.items()},
            "n": {**{k: len(v) for k, v in sets.items()},
                  **{f"attack:{a}": len(p) for a, p in harmful.items()}},
            "judge": getattr(c.judge, "__name__", str(c.judge)),
            "step_judge": getattr(c.step_judge, "__name__", str(c.step_judge)),
            "batch_size": c.batch_size, "seed": c.seed, "trace_seconds": trace_s,
            "total_seconds": total_s,
            "centers_meta": {k: v for k, v in dict(centers.meta).items()
                             if k in ("model", "layer", "steps", "dim", "counts")}}


def _guard_info(guard) -> dict:
    return {"threshold": guard.threshold_, "quantile": guard.config.quantile,
            "num_params": guard.num_params(), "config": dataclasses.asdict(guard.config),
            "final_loss": float(guard.loss_history_[-1])}


def _scores(g) -> dict:
    return {"benign_holdout": g.guard.holdout_scores_.tolist(),
            "benign_test": g.scores_benign.tolist(),
            "attacks": {a: s.tolist() for a, s in g.scores_attack.items()}}
