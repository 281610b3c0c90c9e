"""Response-side attacks (prefill, infill) and the harm judge inside the SRI Guard evaluation:
traces against direct ``tracing.trace`` calls with the same forced prefixes, attack success
against a hand-built expectation from the records on disk, the guard on the successful
jailbreaks by Mann-Whitney and counting, the judge-prompt exclusion, errors."""

import json

import numpy as np
import pytest

from detector_oracle import mann_whitney_auc
from sri_jax.calibration import calibrate
from sri_jax.data.attacks import MASK_SLOT, default_target
from sri_jax.detector.evaluate import EvalReport, evaluate_guard
from sri_jax.sampling import SamplerConfig
from sri_jax.sampling.api import Prompting
from sri_jax.sri.centers import load_centers
from sri_jax.tracing import TraceOptions, read_traces, trace
from tiny_model import WORDS, parity_judge, tiny_chat_model

CFG = SamplerConfig.autoregressive(gen_length=6)
_W = [w for w in WORDS[3:] if not w.startswith("<")]


def _prompts(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_W, rng.integers(1, 3))) for _ in range(n)]


BENIGN = _prompts(32, 0)
RAW = _prompts(8, 1)
# forced response starts of different lengths, in the tiny vocabulary
PREFIXES = ["w7 w8", "w9", "w10 w11 w12", "w13", "w14 w15", "w16", "w17 w18 w19", "w20"]
HARMFUL = {"none": RAW, "suffix": [p + " w1" for p in RAW], "prefill": RAW}
PROMPTING = {"prefill": {"prefix": PREFIXES}}
TRAIN, HOLDOUT, TEST = BENIGN[:16], BENIGN[16:24], BENIGN[24:]


def stub_rule(request: str, response: str) -> bool:
    """The stand-in harm judge's verdict: a fixed function of the pair."""
    return sum(map(ord, request + "|" + response)) % 3 != 0


class StubJudge:
    """A harm judge stand-in that records every pair it is asked about."""

    def __init__(self, rule=stub_rule):
        self.rule, self.calls = rule, []

    def __call__(self, requests, responses):
        self.calls += list(zip(requests, responses))
        return np.array([self.rule(q, r) for q, r in zip(requests, responses)])

    def describe(self):
        return {"judge": "stub", "model": "stub-judge", "threshold": 0.5}


@pytest.fixture(scope="module")
def model():
    return tiny_chat_model(seed=3)


@pytest.fixture(scope="module")
def centers(model):
    return calibrate(model, BENIGN[:6], RAW[:6], CFG, judge=parity_judge, batch_size=4,
                     progress=False)


def _evaluate(model, centers, trace_dir, judge, **kw):
    return evaluate_guard(model, centers, CFG, benign_train=TRAIN, benign_holdout=HOLDOUT,
                          benign_test=TEST, harmful=kw.pop("harmful", HARMFUL),
                          prompting=kw.pop("prompting", PROMPTING), batch_size=8,
                          judge=parity_judge, step_judge=parity_judge,
                          guard_kwargs={"epochs": 10}, classifier=False, ablations=(),
                          baselines=(), n_timing=4, timing_repeats=1, progress=False,
                          harm_judge=judge, trace_dir=trace_dir, **kw)


@pytest.fixture(scope="module")
def run(model, centers, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_attacks")
    judge = StubJudge()
    return _evaluate(model, centers, d, judge), d, judge


def _disk(d):
    """A trace folder's records in prompt id order (numeric ids: as numbers)."""
    rec = read_traces(d)
    ids = rec["prompt_id"]
    order = np.array(sorted(range(len(ids)), key=lambda k: (len(ids[k]), ids[k])))
    return {k: (v[order] if isinstance(v, np.ndarray) else [v[i] for i in order])
            for k, v in rec.items()}


def _expected_success(d):
    """Per attack set, from the records on disk: not refused (the stand-in refusal judge on
    the response, recomputed) and the stub's verdict on (raw request, prefix + response)."""
    out = {}
    for a in HARMFUL:
        r = _disk(d / f"attack__{a}")
        shown = [p + t for p, t in zip(r["prefix"], r["response"])] if "prefix" in r \
            else r["response"]
        refused = np.array([parity_judge(t) for t in r["response"]])
        out[a] = ~refused & np.array([stub_rule(q, s) for q, s in zip(RAW, shown)])
    return out


def test_prefilled_set_equals_a_direct_prefilled_trace(run, model, centers, tmp_path):
    rep, d, _ = run
    direct = trace(model, RAW, CFG, centers=centers, out_dir=tmp_path / "direct",
                   judge=parity_judge, prompting=Prompting(prefix=PREFIXES),
                   options=TraceOptions(batch_size=8, progress=False))
    got, want = _disk(d / "attack__prefill"), _disk(direct)
    assert got["response"] == want["response"] and got["prefix"] == want["prefix"]
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    # the evaluation's program also reads out activations and snapshots: the same math,
    # possibly fused differently, so fp32 SRI values (|sri| <= ~2) agree to a few ulps
    np.testing.assert_allclose(got["sri"], want["sri"], rtol=1e-5, atol=1e-6)
    # the prefix changed what the model wrote (the unprefilled raw set is the same prompts)
    assert not np.array_equal(got["tokens"], _disk(d / "attack__none")["tokens"])
    assert "prefill" in rep.attacks and rep.meta["forced_response"] == {"prefill": ["prefix"]}


def test_success_rows_are_not_refused_and_judged_harmful(run):
    rep, d, judge = run
    want = _expected_success(d)
    per = rep.attack_success["per_attack"]
    assert list(per) == list(HARMFUL)
    for a, w in want.items():
        r = _disk(d / f"attack__{a}")
        assert per[a]["success_rows"] == np.flatnonzero(w).tolist(), a
        assert per[a]["n_success"] == int(w.sum()) and per[a]["n"] == len(RAW)
        assert per[a]["success"] == pytest.approx(w.mean())
        assert per[a]["not_refused"] == pytest.approx(
            np.mean([not parity_judge(t) for t in r["response"]]))
    # only rows that were not refused went to the judge, with the RAW request
    asked = {(q, s) for a in HARMFUL for q, s, t in zip(
        RAW, [p + x for p, x in zip(_disk(d / f"attack__{a}").get("prefix", [""] * 8),
                                    _disk(d / f"attack__{a}")["response"])],
        _disk(d / f"attack__{a}")["response"]) if not parity_judge(t)}
    assert set(judge.calls) == asked and len(judge.calls) == len(asked)
    assert any(w.any() for w in want.values()) and not all(w.all() for w in want.values())
    assert rep.attack_success["harm_judge"] == judge.describe()
    assert all("scores" not in r for r in per.values())  # a judge without score()
    assert not (d / "harm_scores.json").exists()


def test_guard_on_successful_jailbreaks_uses_exactly_those_rows(run):
    rep, d, _ = run
    want = _expected_success(d)
    jb = ["suffix", "prefill"]
    sel = [s for a in jb for s, ok in zip(rep.scores["attacks"][a], want[a]) if ok]
    assert sel, "the stub should make some jailbreak succeed"
    sj = rep.attack_success["successful_jailbreaks"]
    thr = rep.guard["threshold"]
    assert sj["sets"] == jb and sj["from"] == {a: int(want[a].sum()) for a in jb}
    assert sj["n_attack"] == len(sel) and sj["n_benign"] == len(TEST)
    assert sj["auroc"] == pytest.approx(mann_whitney_auc(rep.scores["benign_test"], sel))
    assert sj["tpr"] == pytest.approx(np.mean(np.array(sel) > thr))
    assert rep.attack_success["mean_success_jailbreak"] == pytest.approx(
        np.mean([want[a].mean() for a in jb]))


def test_report_carries_attack_success(run, tmp_path):
    rep, d, _ = run
    d_ = rep.to_dict()
    assert "attack_success" in d_
    rep.save(tmp_path / "r.json")
    assert EvalReport.load(tmp_path / "r.json").attack_success == d_["attack_success"]
    md = rep.table()
    assert "Attack success (harm judge stub-judge" in md
    assert "successful jailbreaks" in md and "not refused % (keyword)" in md


def test_no_success_leaves_the_subset_unmeasured_and_resumes(run, model, centers):
    rep, d, _ = run
    shards = {p: p.stat().st_mtime_ns for p in d.rglob("shard-*.parquet")}
    never = StubJudge(lambda q, r: False)
    again = _evaluate(model, centers, d, never)
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # resumed: nothing retraced
    assert again.scores == rep.scores
    assert again.attack_success["successful_jailbreaks"] is None
    assert all(r["success"] == 0.0 for r in again.attack_success["per_attack"].values())
    assert "No successful jailbreak" in again.table()


def test_real_harm_judge_class_in_the_evaluation(run, model, centers, monkeypatch):
    """The HarmJudge (a tiny random judge model): success = not refused AND its verdict,
    with the judge asked directly about every pair (refused ones too) and masked by hand;
    the report keeps its scores (None where refused), which live in trace_dir's score file,
    so a rerun with the same judge (other threshold) runs no forward pass."""
    from test_harm_judge import Spy, _model

    from sri_jax.judges.harm import HarmJudge

    _, d, _ = run
    judge = HarmJudge(_model(seed=1), batch_size=4, progress=False)
    shown = {}
    for a in HARMFUL:
        r = _disk(d / f"attack__{a}")
        shown[a] = [p + t for p, t in zip(r["prefix"], r["response"])] if "prefix" in r \
            else r["response"]
    direct = {a: judge.score(RAW, s) for a, s in shown.items()}
    # a threshold inside the random judge's scores, so that it says both Yes and No
    judge.threshold = float(np.median(np.concatenate(list(direct.values()))))
    rep = _evaluate(model, centers, d, judge)
    assert (d / "harm_scores.json").is_file()
    per = rep.attack_success["per_attack"]
    verdicts = []
    for a in HARMFUL:
        verdict = judge(RAW, shown[a])
        verdicts.append(verdict)
        refused = np.array([parity_judge(t) for t in _disk(d / f"attack__{a}")["response"]])
        assert per[a]["success_rows"] == np.flatnonzero(~refused & verdict).tolist(), a
        assert [s is None for s in per[a]["scores"]] == refused.tolist(), a
        got = np.array([s for s in per[a]["scores"] if s is not None])
        # judged in other batches than one set alone: fp32 logits ~1 move by ~1e-6
        np.testing.assert_allclose(got, direct[a][~refused], rtol=1e-4, atol=1e-6)
    assert np.concatenate(verdicts).any() and not np.concatenate(verdicts).all()
    assert rep.attack_success["harm_judge"] == json.loads(json.dumps(judge.describe()))
    again = HarmJudge(_model(seed=1), batch_size=4, progress=False,
                      threshold=judge.threshold)
    spy = Spy(monkeypatch, again)
    rep2 = _evaluate(model, centers, d, again)
    assert spy.calls == 0 and spy.encoded == []
    assert rep2.attack_success["per_attack"] == per


def test_table13_attack_success_column(run):
    rep, d, _ = run
    want = _expected_success(d)
    t13, thr = rep.baselines["table13"], rep.guard["threshold"]
    jb = ["suffix", "prefill"]
    assert t13["undefended"]["attack_success"] == pytest.approx(
        np.mean([want[a].mean() for a in jb]))
    flagged = {a: np.array(rep.scores["attacks"][a]) > thr for a in jb}
    assert t13["sri_guard"]["attack_success"] == pytest.approx(
        np.mean([(want[a] & ~flagged[a]).mean() for a in jb]))


def test_an_unprefilled_folder_of_the_same_name_is_refused(model, centers, tmp_path):
    from sri_jax.detector.protocol import trace_set

    trace_set(model, RAW, CFG, centers, out_dir=tmp_path / "attack__prefill",
              judge=parity_judge, step_judge=parity_judge, record=True,
              options=TraceOptions(set_name="attack:prefill", batch_size=8, progress=False))
    with pytest.raises(ValueError, match=r"different trace run \(differs in \['prefix'"):
        _evaluate(model, centers, tmp_path, StubJudge())


def test_bad_response_side_inputs_fail_before_tracing(model, centers, tmp_path):
    diff = tiny_chat_model(seed=0, diffusion=True)
    dcfg = SamplerConfig.for_model(diff, gen_length=8, steps=4)
    cases = [
        (model, CFG, {"prefill": {"prefix": PREFIXES[:3]}}, "attack 'prefill': 3 prefixes"),
        (model, CFG, {"other": {"prefix": PREFIXES}}, "not an attack set"),
        (model, CFG, {"prefill": {"template": [f"w1 {MASK_SLOT}"] * 8}},
         "attack 'prefill': template .infill. needs a diffusion model"),
        (diff, dcfg, {"prefill": {"template": ["w1 " + MASK_SLOT * 20] * 8}},
         "attack 'prefill': template 0 is 21 tokens .* raise gen_length"),
    ]
    for m, cfg, prompting, msg in cases:
        with pytest.raises(ValueError, match=msg):
            evaluate_guard(m, centers, cfg, benign_train=TRAIN, benign_holdout=HOLDOUT,
                           benign_test=TEST, harmful=HARMFUL, prompting=prompting,
                           trace_dir=tmp_path, progress=False)
    for harmful, msg in (({"suffix": RAW}, r"harmful\['none'\]"),
                         ({"none": RAW, "short": RAW[:5]}, "'short' has 5 prompts but there "
                                                           "are 8 raw requests")):
        with pytest.raises(ValueError, match=msg):
            evaluate_guard(model, centers, CFG, benign_train=TRAIN, benign_holdout=HOLDOUT,
                           benign_test=TEST, harmful=harmful, harm_judge=StubJudge(),
                           trace_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------- the real splits

def _adv_test(n, ids=False):
    """The first ``n`` held-out AdvBench prompts (or their ids) of the seed-0 split."""
    from sri_jax.data.sets import load_prompt_set, split

    adv = load_prompt_set("advbench")
    test = split(adv, sizes={"test": n, "calib": len(adv) - n}, seed=0)["test"]
    return list(test.ids if ids else test.prompts)


def test_evaluation_splits_force_the_response_per_model_kind():
    from sri_jax.data.splits import evaluation_splits

    raw = _adv_test(4)
    kw = dict(n_calib_harmless=4, n_calib_harmful=4, n_train=4, n_holdout=4, n_test=4,
              n_attack=4, attacks=("prefill", "infill", "refusal_suppression"))
    with pytest.raises(ValueError, match=r"\['prefill', 'infill'\] force the response: pass "
                                         "causal="):
        evaluation_splits(**kw)
    ar, dif = evaluation_splits(**kw, causal=True), evaluation_splits(**kw, causal=False)
    heads = [f"{default_target(p)}:\nStep 1:" for p in raw]
    templates = [f"{default_target(p)}:" + "".join(f"\nStep {i}:" + MASK_SLOT * 24
                                                   for i in (1, 2, 3)) for p in raw]
    for s in (ar, dif):
        assert s["harmful"]["prefill"] == s["harmful"]["infill"] == raw == s["harmful"]["none"]
        assert s["prompting"]["prefill"] == {"prefix": [default_target(p) for p in raw]}
        assert "refusal_suppression" not in s["prompting"]
    assert ar["prompting"]["infill"] == {"prefix": heads}
    assert dif["prompting"]["infill"] == {"template": templates}


def test_evaluation_splits_exclude_the_judge_prompts():
    from sri_jax.data.splits import evaluation_splits
    from sri_jax.judges.harm import calibration_prompt_ids

    s = evaluation_splits(exclude_ids=calibration_prompt_ids())  # the defaults are clean
    for name, key in (("harmful", "harmful"), ("test", "benign_test"),
                      ("train", "benign_train")):
        with pytest.raises(ValueError, match=f"evaluation split '{name}' holds 1 excluded"):
            evaluation_splits(exclude_ids=["x/1", s["ids"][key][2]])
    # the judge's AdvBench prompts are at the end of the split order: 400 test prompts reach them
    with pytest.raises(ValueError, match="'harmful' holds .* calibrated on by the harm judge"):
        evaluation_splits(n_attack=400, exclude_ids=calibration_prompt_ids())


def test_run_evaluation_with_prefill_and_infill(tmp_path, model, monkeypatch):
    """``sri-jax evaluate``'s driver on the offline splits with both response-side attacks
    (AR: infill = the template's head as a prefix) and a harm judge: each set equals a direct
    prefilled trace of the same prompts; a rerun retraces nothing and judges no pair again
    (the scores are kept in out/traces/harm_scores.json); report.json holds the scores."""
    from test_harm_judge import Spy, _model

    from sri_jax.commands.evaluate import SplitSizes, run_evaluation
    from sri_jax.judges.harm import HarmJudge

    sizes = SplitSizes(n_calib_harmless=8, n_calib_harmful=8, n_train=8, n_holdout=8, n_test=4,
                       n_attack=4, attacks=("prefill", "infill"))
    kw = dict(sizes=sizes, judge=parity_judge, step_judge=parity_judge, classifier=False,
              baselines=(), ablations=(), batch_size=8, guard_kwargs={"epochs": 5},
              progress=False, n_timing=4, timing_repeats=1, log=lambda *a: None)
    judge_model = _model(seed=1)
    rep = run_evaluation(model, CFG, tmp_path, harm_judge=HarmJudge(judge_model,
                                                                    progress=False), **kw)
    assert list(rep.attacks) == ["none", "prefill", "infill"]
    assert rep.meta["forced_response"] == {"prefill": ["prefix"], "infill": ["prefix"]}
    assert list(rep.attack_success["per_attack"]) == ["none", "prefill", "infill"]
    raw = _adv_test(4)
    c = load_centers(tmp_path / "centers")
    for name, prefixes in (("prefill", [default_target(p) for p in raw]),
                           ("infill", [f"{default_target(p)}:\nStep 1:" for p in raw])):
        direct = trace(model, raw, CFG, centers=c, out_dir=tmp_path / f"direct_{name}",
                       judge=parity_judge, prompting=Prompting(prefix=prefixes),
                       options=TraceOptions(batch_size=8, progress=False))
        got, want = _disk(tmp_path / "traces" / f"attack__{name}"), _disk(direct)
        assert got["prompt"] == raw and got["prefix"] == want["prefix"]
        np.testing.assert_array_equal(got["tokens"], want["tokens"])
        np.testing.assert_allclose(got["sri"], want["sri"], rtol=1e-5, atol=1e-6)
    disk = {p: p.stat().st_mtime_ns for p in (tmp_path / "traces").rglob("*.parquet")}
    saved = json.loads((tmp_path / "report.json").read_text())["attack_success"]["per_attack"]
    assert saved == rep.attack_success["per_attack"]
    assert sum(s is not None for r in saved.values() for s in r["scores"]) > 0
    assert (tmp_path / "traces" / "harm_scores.json").is_file()
    judge = HarmJudge(judge_model, progress=False)
    spy = Spy(monkeypatch, judge)
    again = run_evaluation(model, CFG, tmp_path, harm_judge=judge, **kw)
    assert {p: p.stat().st_mtime_ns for p in disk} == disk
    assert spy.calls == 0 and spy.encoded == []
    assert again.attack_success["per_attack"] == rep.attack_success["per_attack"]


def test_cli_takes_prefill_infill_and_the_harm_judge(tmp_path):
    from sri_jax.cli import main, parse_args

    a = parse_args(["evaluate", "--out", str(tmp_path), "--attacks", "prefill,infill,none"])
    assert a.attacks == "prefill,infill,none" and a.harm_judge == "none"
    a = parse_args(["evaluate", "--out", str(tmp_path), "--harm-judge",
                    "qwen2.5-coder-1.5b-instruct"])
    assert a.harm_judge == "qwen2.5-coder-1.5b-instruct"
    assert parse_args(["demo", "--attacks", "prefill"]).attacks == "prefill"
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--out", str(tmp_path / "e"), "--attacks", "prefill,bogus"])
    assert e.value.code == 2


def test_demo_traces_prefill_with_its_prefixes(tmp_path, model, centers, monkeypatch):
    """`demo --attacks prefill` on the tiny model: the prefilled set equals a direct
    prefilled trace of the same held-out prompts, and the guard evaluates it."""
    from sri_jax.commands.demo import run_demo
    from sri_jax.sri.centers import save_centers

    monkeypatch.setattr("sri_jax.weights.loader.load_model", lambda *a, **k: model)
    save_centers(centers, tmp_path / "centers")
    res = run_demo(tmp_path / "out", n_test=3, n_guard_train=8, n_guard_holdout=4,
                   attacks=("prefill",), gen_length=CFG.gen_length, batch_size=8,
                   progress=False, centers_path=str(tmp_path / "centers"),
                   log=lambda *a: None)
    assert [r["group"] for r in res["rows"]] == ["benign", "advbench", "advbench/prefill"]
    assert set(res["guard"].attacks) == {"none", "prefill"}
    raw, ids = _adv_test(3), _adv_test(3, ids=True)
    direct = trace(model, raw, CFG, centers=centers, out_dir=tmp_path / "direct", ids=ids,
                   prompting=Prompting(prefix=[default_target(p) for p in raw]),
                   options=TraceOptions(batch_size=8, progress=False))
    got, want = _disk(tmp_path / "out" / "traces" / "advbench__prefill"), _disk(direct)
    assert got["prompt_id"] == sorted(ids) and got["prompt"] == want["prompt"]
    assert got["prefix"] == want["prefix"]
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
