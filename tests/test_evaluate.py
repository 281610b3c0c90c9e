"""The SRI Guard evaluation protocol (sri_jax.detector.evaluate) on the tiny random chat model
with a deterministic stand-in judge, checked against independent recomputations."""

import os
import subprocess
import sys

import numpy as np
import pytest

from detector_oracle import (SCORE_ATOL, SCORE_RTOL, mann_whitney_auc, np_guard_score,
                             np_quantile_linear)
from sri_jax.detector.baselines import (ExternalGuard, LlamaGuard3, PerplexityFilter,
                                        SelfExamination, prompt_nll, prompt_perplexity)
from sri_jax.detector.evaluate import EvalReport, evaluate_guard, step_texts
from sri_jax.sampling import Readout, SamplerConfig, generate
from sri_jax.calibration import calibrate
from sri_jax.judges.keyword import keyword_trace
from sri_jax.tracing import read_traces
from tiny_model import WORDS, parity_judge, tiny_chat_model
from tolerance import FP32_REL

CFG = SamplerConfig.autoregressive(gen_length=6)
_W = [w for w in WORDS[3:] if not w.startswith("<")]



def _prompts(n, seed, lo=1, hi=3):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_W, rng.integers(lo, hi))) for _ in range(n)]


# every templated prompt has 14-16 tokens: one length bucket, one batch shape (batch 8), so
# each sampler variant compiles once and the direct checks below reuse the same programs
BENIGN = _prompts(32, 0)
HARMFUL = {"none": _prompts(8, 1), "suffix_attack": [p + " w1" for p in _prompts(8, 2)],
           "wrap_attack": ["w5 " + p for p in _prompts(8, 3)]}
TRAIN, HOLDOUT, TEST = BENIGN[:16], BENIGN[16:24], BENIGN[24:]
GUARD_KW = {"epochs": 20}


class FlagEveryOther:
    """A stand-in ExternalGuard: flags every other response."""

    def __call__(self, prompts, responses):
        return np.arange(len(prompts)) % 2 == 0


@pytest.fixture(scope="module")
def model():
    return tiny_chat_model(seed=3)


@pytest.fixture(scope="module")
def centers(model):
    return calibrate(model, BENIGN[:6], HARMFUL["none"][:6], CFG, judge=parity_judge,
                     batch_size=4, progress=False)


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval_traces")


@pytest.fixture(scope="module")
def report(model, centers, trace_dir):
    return evaluate_guard(model, centers, CFG, benign_train=TRAIN,
                          benign_holdout=HOLDOUT, benign_test=TEST,
                          harmful=HARMFUL, batch_size=8, judge=parity_judge,
                          step_judge=parity_judge, guard_kwargs=GUARD_KW, progress=False,
                          classifier_kwargs={"epochs": 20},
                          external_guards={"every_other": FlagEveryOther()},
                          n_timing=8, timing_repeats=2, self_exam_tokens=3,
                          trace_dir=trace_dir)


def test_report_layout_and_round_trip(report, tmp_path):
    d = report.to_dict()
    assert set(d) == {"meta", "guard", "benign", "attacks", "means", "supervised",
                      "ablations", "baselines", "scores", "attack_success"}
    assert d["attack_success"] is None  # no harm judge: not measured
    assert set(d["attacks"]) == set(HARMFUL)
    assert set(d["means"]) == {"all", "jailbreak"}
    assert set(d["ablations"]) == {"sri_last", "first_step", "text"}
    for r in d["ablations"].values():
        assert set(r["per_attack"]) == set(HARMFUL)
        assert r["mean_auroc"] == pytest.approx(np.mean(list(r["per_attack"].values())))
    # the guard's own signal is the guard's per-attack AUROC
    assert d["ablations"]["sri_last"]["per_attack"] == {a: r["auroc"]
                                                        for a, r in d["attacks"].items()}
    t13 = d["baselines"]["table13"]
    assert set(t13) == {"undefended", "perplexity", "self_exam", "every_other", "sri_guard",
                        "sri_guard+signal"}
    sup = d["supervised"]["per_attack"]
    assert set(sup) == set(HARMFUL)
    for held, r in sup.items():  # disjoint: the held-out attack is never trained on
        assert held not in r["trained_on"] and len(r["trained_on"]) == len(HARMFUL) - 1
    # JSON round trip and the markdown table
    back = EvalReport.load(report.save(tmp_path / "r.json"))
    assert back.to_dict() == d
    md = report.table()
    for name in list(HARMFUL) + ["first_step", "text", "sri_guard", "perplexity"]:
        assert name in md


def test_rerun_resumes_from_the_trace_folder(model, centers, report, trace_dir):
    """Every set is traced into the folder; a rerun (here with other options, after losing
    one set's shard as an interrupted run would) regenerates only what is missing and
    reproduces the report."""
    shards = {p: p.stat().st_mtime_ns for p in sorted(trace_dir.rglob("shard-*.parquet"))}
    assert {p.parent.name for p in shards} == {"benign_train", "benign_holdout",
                                               "benign_test", "attack__none",
                                               "attack__suffix_attack", "attack__wrap_attack"}
    lost = next(p for p in shards if p.parent.name == "attack__wrap_attack")
    lost.unlink()
    rep = evaluate_guard(model, centers, CFG, benign_train=TRAIN, benign_holdout=HOLDOUT,
                         benign_test=TEST, harmful=HARMFUL, batch_size=8, judge=parity_judge,
                         step_judge=parity_judge, guard_kwargs=GUARD_KW, progress=False,
                         classifier=False, ablations=("text",), baselines=(), n_timing=8,
                         timing_repeats=1, trace_dir=trace_dir)
    assert lost.exists()
    for p, mtime in shards.items():
        if p != lost:
            assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten"
    assert rep.scores == report.scores
    assert rep.ablations["text"] == report.ablations["text"]


def test_run_evaluation_writes_report_and_resumes(tmp_path, model):
    """``sri-jax evaluate``'s driver on the real offline prompt sets (tiny model, stand-in
    judge): report, guard, centers, per-set and per-layer traces on disk; a second run
    reuses all of it (no file rewritten) and reproduces the report."""
    from sri_jax.commands.evaluate import SplitSizes, run_evaluation

    sizes = SplitSizes(n_calib_harmless=8, n_calib_harmful=8, n_train=8, n_holdout=8, n_test=4,
                       n_attack=4, attacks=("refusal_suppression",))
    kw = dict(sizes=sizes, judge=parity_judge,
              classifier=False, baselines=(), ablations=("first_step",), layers=("first",),
              batch_size=8, guard_kwargs={"epochs": 5}, progress=False, n_timing=4,
              timing_repeats=1, log=lambda *a: None)
    rep = run_evaluation(model, CFG, tmp_path, **kw)
    for f in ("report.json", "report.md", "guard/detector.json", "centers/centers.npz",
              "traces/layer_first/centers/centers.npz"):
        assert (tmp_path / f).is_file(), f
    sets = ["benign_train", "benign_holdout", "benign_test", "attack__none",
            "attack__refusal_suppression"]
    for root in ("traces", "traces/layer_first"):
        for name in sets:
            assert (tmp_path / root / name / "manifest.json").is_file(), (root, name)
    disk = {p: p.stat().st_mtime_ns for p in (tmp_path / "traces").rglob("*")
            if p.is_file() and p.name != ".lock"}  # the run lock records each run's pid
    again = run_evaluation(model, CFG, tmp_path, centers_path=tmp_path / "centers", **kw)
    assert {p: p.stat().st_mtime_ns for p in disk} == disk
    assert again.scores == rep.scores and again.ablations == rep.ablations
    assert EvalReport.load(tmp_path / "report.json").attacks == again.to_dict()["attacks"]


def _from_disk(trace_dir, name):
    """A set's traces and stand-in-judge verdicts, read back from the trace folder in prompt
    order (independent of the report's own bookkeeping)."""
    rec = read_traces(trace_dir / name)
    order = np.argsort([int(i) for i in rec["prompt_id"]])
    refused = np.array([parity_judge(rec["response"][i]) for i in order])
    return rec["sri"][order], refused


def test_report_values_recomputed_from_the_trace_folder(report, trace_dir):
    """Every number of the guard rows, from the traces on disk: scores by a float64 numpy
    MLP, the threshold as the hand-computed 99th percentile of the hold-out scores, AUROC by
    Mann-Whitney, rates by counting, refusal with the guard as refused OR flagged."""
    params = report.guard_.params_
    s = report.scores
    hold, _ = _from_disk(trace_dir, "benign_holdout")
    np.testing.assert_allclose(s["benign_holdout"], np_guard_score(params, hold),
                               rtol=SCORE_RTOL, atol=SCORE_ATOL)
    thr = report.guard["threshold"]
    assert thr == pytest.approx(np_quantile_linear(np_guard_score(params, hold), 0.99),
                                rel=SCORE_RTOL)
    test_sri, test_refused = _from_disk(trace_dir, "benign_test")
    sb = np.asarray(s["benign_test"])
    np.testing.assert_allclose(sb, np_guard_score(params, test_sri), rtol=SCORE_RTOL,
                               atol=SCORE_ATOL)
    fb = sb > thr
    assert report.benign == {"n": len(TEST), "refusal_no_guard": test_refused.mean(),
                             "flag_rate": fb.mean(),
                             "refusal_with_guard": (test_refused | fb).mean()}
    with_guard, no_guard = {}, {}
    for a in HARMFUL:
        sri, refused = _from_disk(trace_dir, f"attack__{a}")
        sa = np.asarray(s["attacks"][a])
        np.testing.assert_allclose(sa, np_guard_score(params, sri), rtol=SCORE_RTOL,
                                   atol=SCORE_ATOL)
        r, fa = report.attacks[a], sa > thr
        assert r["auroc"] == pytest.approx(mann_whitney_auc(sb, sa))
        assert (r["tpr"], r["fpr"], r["flag_rate"]) == (fa.mean(), fb.mean(), fa.mean())
        # 1 % and 5 % of 8 benign scores: none may lie above, so the threshold is their max
        assert r["tpr_at_1pct_fpr"] == r["tpr_at_5pct_fpr"] == np.mean(sa > sb.max())
        assert r["refusal_no_guard"] == refused.mean()
        with_guard[a], no_guard[a] = (refused | fa).mean(), refused.mean()
        assert r["refusal_with_guard"] == with_guard[a]
    for k in ("auroc", "tpr", "refusal_with_guard"):
        assert report.means["all"][k] == pytest.approx(
            np.mean([report.attacks[a][k] for a in HARMFUL]))
        assert report.means["jailbreak"][k] == pytest.approx(
            np.mean([report.attacks[a][k] for a in ("suffix_attack", "wrap_attack")]))
    # Table 13: the jailbreak sets are every set but the raw "none"; the stand-in external
    # guard flags the even rows
    t13, jb = report.baselines["table13"], ("suffix_attack", "wrap_attack")
    assert t13["undefended"]["false_positive"] == test_refused.mean()
    assert t13["undefended"]["jailbreak_refusal"] == pytest.approx(
        np.mean([no_guard[a] for a in jb]))
    for name in ("sri_guard", "sri_guard+signal"):
        assert t13[name]["false_positive"] == (test_refused | fb).mean()
        assert t13[name]["jailbreak_refusal"] == pytest.approx(
            np.mean([with_guard[a] for a in jb]))
        assert t13[name]["per_attack_refusal"] == pytest.approx(with_guard)
    even = np.arange(8) % 2 == 0
    assert t13["every_other"]["false_positive"] == (test_refused | even).mean()
    assert t13["every_other"]["jailbreak_refusal"] == pytest.approx(
        np.mean([(_from_disk(trace_dir, f"attack__{a}")[1] | even).mean() for a in jb]))


def test_guard_scores_are_the_traced_sri_scores(model, centers, report):
    """Independent path: generate the test set directly, score with the returned guard."""
    res = generate(model, TEST, CFG, centers=centers)
    np.testing.assert_allclose(report.guard_.score_samples(res.sri),
                               report.scores["benign_test"], rtol=1e-5, atol=1e-7)


def test_overheads_follow_from_the_recorded_times(report):
    """Each overhead column by hand from the raw times the report keeps: the fastest of the
    interleaved rounds, 100 * (variant - plain) / plain, clipped at 0 in the table."""
    tm = report.baselines["timing"]
    rounds = tm["rounds_s"]
    assert set(rounds) == {"plain", "sri", "sri_guard"}
    assert all(len(v) == tm["repeats"] == 2 and min(v) > 0 for v in rounds.values())
    t = {k: min(v) for k, v in rounds.items()}
    assert (tm["t_plain_s"], tm["t_sri_s"], tm["t_sri_guard_s"]) == (t["plain"], t["sri"],
                                                                     t["sri_guard"])

    def pct(x):
        return 100.0 * x / t["plain"]

    assert tm["sri_signal_overhead_pct_raw"] == pytest.approx(pct(t["sri"] - t["plain"]))
    assert tm["sri_guard_overhead_pct_raw"] == pytest.approx(pct(t["sri_guard"] - t["plain"]))
    assert tm["detector_only_overhead_pct_raw"] == pytest.approx(pct(t["sri_guard"] - t["sri"]))
    assert tm["noise_pct"] == pytest.approx(max(100.0 * (max(v) - min(v)) / min(v)
                                                for v in rounds.values()))
    assert tm["offline_scoring_pct"] == pytest.approx(pct(tm["offline_scoring_s"]))
    t13 = report.baselines["table13"]
    assert t13["undefended"]["overhead_pct"] == 0.0
    assert t13["sri_guard"]["overhead_pct"] == pytest.approx(max(0.0, pct(
        tm["offline_scoring_s"])))
    assert t13["sri_guard"]["in_loop_overhead_pct_raw"] == tm["detector_only_overhead_pct_raw"]
    assert t13["sri_guard+signal"]["overhead_pct"] == pytest.approx(max(0.0, pct(
        t["sri_guard"] - t["plain"])))
    for name in ("perplexity", "self_exam", "every_other"):
        assert t13[name]["overhead_pct"] == pytest.approx(pct(t13[name]["time_s"])), name


def test_perplexity_equals_numpy_recomputation(model):
    prompts = TEST  # lengths 14 and 15, left-padded to the bucket of 16 in one batch
    got = prompt_nll(model, prompts, batch_size=8)
    assert len({len(p.split()) for p in prompts}) == 2
    want = []
    for p, g in zip(prompts, got):
        ids, _ = model.encode_chat([p])  # one unpadded row
        logits = np.asarray(model.forward(ids).logits[0], np.float64)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll = lse[:-1] - logits[np.arange(ids.shape[1] - 1), ids[0, 1:]]
        want.append(nll.mean())
        # lse - logit: two fp32 logits from another batch shape, each within FP32_REL of the
        # logits' scale (tests/tolerance.py)
        assert g == pytest.approx(nll.mean(), abs=2 * FP32_REL * np.abs(logits).max())
    want = np.array(want)
    # perplexity = exp(nll): an nll error of e is a relative perplexity error of ~e
    np.testing.assert_allclose(prompt_perplexity(model, prompts, batch_size=8), np.exp(want),
                               rtol=1e-3)
    pf = PerplexityFilter(model, quantile=0.95, batch_size=8).fit(prompts)
    assert pf.threshold_ == pytest.approx(np_quantile_linear(np.exp(want), 0.95), rel=1e-3)
    # flagged: strictly above the threshold; 0.95 * 7 = 6.65, so only the largest of the 8
    assert pf.predict(prompts).tolist() == (np.exp(want) == np.exp(want).max()).tolist()


def test_self_examination_and_guard_interfaces(model):
    se = SelfExamination(model, max_new_tokens=3, batch_size=8)
    flags = se(["a", "b"], ["w1 w2", ""])
    assert flags.dtype == bool and flags.shape == (2,) and len(se.answers_) == 2
    assert flags.tolist() == ["yes" in a.lower().split() for a in se.answers_]
    assert isinstance(FlagEveryOther(), ExternalGuard) and isinstance(se, ExternalGuard)
    with pytest.raises(RuntimeError, match="Llama Guard 3"):
        LlamaGuard3(str(os.path.join(os.path.dirname(__file__), "no-such-checkpoint")))


def test_text_detectors_share_one_estimator_interface(model):
    """Perplexity filter, self-examination and a plain callable guard: fit / score_samples /
    threshold_ / predict, sklearn get_params and clone (an unfitted copy sharing the model)."""
    from sklearn.base import clone

    from sri_jax.detector.baselines import CallableGuard, TextDetector, as_detector

    pf = PerplexityFilter(model, quantile=0.95, batch_size=8)
    se = SelfExamination(model, max_new_tokens=3, batch_size=8)
    ext = as_detector(FlagEveryOther())
    assert isinstance(ext, CallableGuard) and as_detector(pf) is pf
    for det in (pf, se, ext):
        assert isinstance(det, TextDetector)
        c = clone(det)
        assert type(c) is type(det) and c is not det
        assert c.get_params().keys() == det.get_params().keys()
        if "model" in c.get_params():
            assert c.model is model
    assert clone(pf.fit(TEST)).threshold_ is None and pf.threshold_ is not None
    assert clone(pf).set_params(quantile=0.5).quantile == 0.5
    # the wrapped callable flags the even rows: scores 1/0 above / below threshold_ 0.5
    s = ext.score_samples(TEST, TEST)
    assert s.tolist() == [1.0, 0.0] * 4 and ext.predict(TEST, TEST).tolist() == [True, False] * 4
    flags = se.predict(["a", "b"], ["w1 w2", ""])
    assert flags.tolist() == ["yes" in a.lower().split() for a in se.answers_]


def test_step_texts_give_the_keyword_trace(model, centers, report):
    res = generate(model, TEST, CFG, centers=centers,
                   readout=Readout(activations=True, snapshots=True))
    st = step_texts(model, res.snapshots, CFG)
    assert len(st) == 8 and all(len(s) == CFG.steps for s in st)
    for row, final in zip(st, res.texts):
        assert row[-1] == final  # the last step shows the whole response
    kt = keyword_trace(st, judge=parity_judge)
    assert kt.shape == (8, CFG.steps)
    for i, row in enumerate(st):  # AR: step t shows the first t tokens
        for t in range(CFG.steps):
            want = model.decode(res.tokens[i:i + 1, :t + 1])[0]
            assert row[t] == want


def test_cli_help(capsys):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "sri_jax.cli", "evaluate", "--help"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--out", "--llama-guard", "--layers", "--ablations", "--baselines", "--n"):
        assert flag in out.stdout
    from sri_jax.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train-detector", "--help"])
    assert e.value.code == 0 and "--centers" in capsys.readouterr().out
