"""SRI Guard / SRIClassifier / metrics on synthetic numpy traces (oracles: numpy, hand math)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from detector_oracle import (SCORE_ATOL, SCORE_RTOL, mann_whitney_auc, np_guard_score, np_mlp,
                             np_quantile_linear)
from sri_jax.detector import (CentersMismatchError, SRIClassifier, SRIGuard, evaluate_scores,
                              guard_score, refusal_with_guard, threshold_at_fpr, tpr_at_fpr)
from sri_jax.detector import autoencoder as ae
from sri_jax.sri.signal import Centers

T = 32


def benign(n, seed):
    """Smooth sigmoid-like rise from ~0.5 to ~0.8 (random onset and slope) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, T)
    c = rng.uniform(0.2, 0.6, (n, 1))
    k = rng.uniform(8.0, 14.0, (n, 1))
    return 0.8 - 0.3 / (1.0 + np.exp(k * (t - c))) + rng.normal(0.0, 0.02, (n, T))


def attack(n, seed):
    """Benign-like curves with a planted dip into the refusal region and a recovery."""
    rng = np.random.default_rng(seed + 10_000)
    x = benign(n, seed)
    ctr = rng.integers(8, 24, (n, 1))
    depth = rng.uniform(0.35, 0.6, (n, 1))
    return x - depth * np.exp(-(((np.arange(T) - ctr) / 3.0) ** 2))


META = {"model": "toy", "weight_hash": "abc123", "layer": "last", "pooling": "all",
        "steps": T, "dim": 8, "sampler": {"kind": "diffusion", "steps": T, "gen_length": 64,
                                          "block_length": 64, "temperature": 0.0}}


def make_centers(meta=META, seed=0):
    rng = np.random.default_rng(seed)
    return Centers(rng.normal(size=(T, 8)).astype(np.float32),
                   rng.normal(size=(T, 8)).astype(np.float32), dict(meta))


@pytest.fixture(scope="module")
def data():
    return {"train": benign(1000, 0), "b_test": benign(500, 1), "b_test2": benign(500, 2),
            "a_test": attack(500, 3)}


@pytest.fixture(scope="module")
def guard(data):
    return SRIGuard().fit(data["train"], centers_meta=make_centers())


# ------------------------------------------------------------------------------ the guard

def test_separates_planted_anomalies(guard, data):
    m = evaluate_scores(guard.score_samples(data["b_test"]), guard.score_samples(data["a_test"]),
                        guard.threshold_)
    assert m["auroc"] > 0.9 and m["auprc"] > 0.9
    assert m["tpr"] > 0.8 and m["fpr"] < 0.05
    # by hand from the numpy oracle's errors (no attack error sits within rounding of it)
    oracle = np_guard_score(guard.params_, data["a_test"])
    assert np.abs(oracle - guard.threshold_).min() > 1e-5 * guard.threshold_
    assert m["tpr"] == np.mean(oracle > guard.threshold_)


def test_does_not_separate_benign_from_benign(guard, data):
    m = evaluate_scores(guard.score_samples(data["b_test"]),
                        guard.score_samples(data["b_test2"]), guard.threshold_)
    assert abs(m["auroc"] - 0.5) < 0.1


def test_threshold_is_the_99th_percentile_of_heldout(guard, data):
    """Oracle: the numpy float64 MLP's errors on the held-out rows, their 99th percentile by
    hand (sorted order statistics, linear interpolation at 0.99 * (n - 1))."""
    hold, train = guard.holdout_indices_, guard.train_indices_
    assert len(hold) == 200 and len(train) == 800 and not set(hold) & set(train)
    assert sorted(np.r_[hold, train]) == list(range(1000))
    oracle = np_guard_score(guard.params_, data["train"][hold])
    np.testing.assert_allclose(guard.holdout_scores_, oracle, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    assert guard.threshold_ == pytest.approx(np_quantile_linear(oracle, 0.99), rel=SCORE_RTOL)
    # 0.99 * 199 = 197.01: the threshold lies between the 3rd and 2nd largest errors, so
    # exactly two held-out traces are flagged
    assert (guard.holdout_scores_ > guard.threshold_).sum() == 2
    # explicit holdout: same training rows -> same params -> threshold from the given holdout
    g = SRIGuard().fit(data["train"][train], holdout=data["b_test"])
    assert g.holdout_indices_ is None
    assert g.threshold_ == pytest.approx(
        np_quantile_linear(np_guard_score(g.params_, data["b_test"]), 0.99), rel=SCORE_RTOL)
    for a, b in zip(g.params_["layers"], guard.params_["layers"]):
        assert np.array_equal(a["kernel"], b["kernel"]) and np.array_equal(a["bias"], b["bias"])


def test_score_samples_matches_numpy_oracle(guard, data):
    x = np.concatenate([data["b_test"][:100], data["a_test"][:100]])
    ours = guard.score_samples(x)
    oracle = np_guard_score(guard.params_, x)
    np.testing.assert_allclose(ours, oracle, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    # the module's own layers hold the same numbers as the plain pytree
    for layer, p in zip(guard.model_.layers, guard.params_["layers"]):
        np.testing.assert_array_equal(np.asarray(layer.kernel[...]), p["kernel"])


def test_decision_function_and_predict_signs(guard, data):
    x = np.concatenate([data["b_test"], data["a_test"]])
    s = guard.score_samples(x)
    d = guard.decision_function(x)
    np.testing.assert_array_equal(d, guard.threshold_ - s)
    np.testing.assert_array_equal(guard.predict(x), d < 0)
    assert guard.predict(x).dtype == bool


def test_deterministic_training(guard, data):
    again = SRIGuard().fit(data["train"])
    for a, b in zip(again.params_["layers"], guard.params_["layers"]):
        assert np.array_equal(a["kernel"], b["kernel"]) and np.array_equal(a["bias"], b["bias"])
    assert again.threshold_ == guard.threshold_
    np.testing.assert_array_equal(again.loss_history_, guard.loss_history_)
    assert guard.loss_history_[-1] < 0.1 * guard.loss_history_[0]


def test_param_count_default():
    n = SRIGuard().num_params(32)
    assert n == 32 * 32 + 32 + 32 * 16 + 16 + 16 * 32 + 32 + 32 * 32 + 32  # 3184


def test_param_count_matches_model(guard):
    leaves = jax.tree.leaves(guard.params_)
    assert sum(int(np.size(l)) for l in leaves) == guard.num_params() == 3184
    assert [l["kernel"].shape for l in guard.params_["layers"]] == [(32, 32), (32, 16),
                                                                    (16, 32), (32, 32)]


def test_malformed_traces(guard):
    good = benign(4, 7)
    with pytest.raises(ValueError, match="T=16 steps but the detector was fitted on T=32"):
        guard.score_samples(good[:, :16])
    bad = good.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf .* row\(s\) \[2\]"):
        guard.predict(bad)
    bad[2, 5] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        guard.decision_function(bad)
    with pytest.raises(ValueError, match=r"2-D \[N, T\].*traces\[None, :\]"):
        guard.score_samples(good[0])
    with pytest.raises(ValueError, match="2-D"):
        guard.score_samples(good[None])
    with pytest.raises(ValueError, match="empty"):
        guard.score_samples(np.zeros((0, T)))
    with pytest.raises(ValueError, match="benign_traces .*NaN"):
        SRIGuard().fit(bad)
    with pytest.raises(ValueError, match="holdout .*T=30"):
        SRIGuard().fit(good, holdout=good[:, :30])


def test_not_fitted_and_bad_config():
    with pytest.raises(NotFittedError, match="not fitted"):
        SRIGuard().score_samples(benign(2, 0))
    with pytest.raises(ValueError, match="activation"):
        SRIGuard(activation="swish2")
    with pytest.raises(ValueError, match="quantile"):
        SRIGuard(quantile=1.5)


def test_pure_guard_score_under_jit(guard, data):
    fn, params, thr = guard.as_pure()
    x = np.concatenate([data["b_test"], data["a_test"], data["train"][guard.holdout_indices_]])

    @jax.jit
    def flag_rows(params, sigma):  # what a sampler would do with its carried sigma [B, T]
        err = fn(params, sigma)
        return err, err > thr

    err, flags = flag_rows(params, jnp.asarray(x, jnp.float32))
    oracle = np_guard_score(guard.params_, x.astype(np.float32))
    np.testing.assert_allclose(np.asarray(err, np.float64), oracle, rtol=SCORE_RTOL,
                               atol=SCORE_ATOL)
    # the float32 threshold reproduces predict exactly (same fp32 errors on both sides)
    np.testing.assert_array_equal(np.asarray(flags), guard.predict(x))
    assert thr.dtype == np.float32 and float(thr) <= guard.threshold_
    # the module-level function with plain numpy params agrees too, and stays pure
    direct = jax.jit(guard_score)(guard.params_, x.astype(np.float32))
    np.testing.assert_allclose(np.asarray(direct, np.float64), oracle, rtol=SCORE_RTOL,
                               atol=SCORE_ATOL)
    jax.make_jaxpr(fn)(params, jnp.zeros((3, T)))


def test_float32_threshold_floor():
    for t in (0.1, 1e-3, 0.000644853577250614, 2.0 / 3.0):
        f = ae._float32_floor(t)
        assert float(f) <= t < float(np.nextafter(f, np.float32(np.inf)))


# ------------------------------------------------------------------------------ persistence

def test_orbax_round_trip(guard, data, tmp_path):
    path = guard.save(tmp_path / "guard")
    loaded = SRIGuard.load(path)
    x = np.concatenate([data["b_test"], data["a_test"]])
    assert np.array_equal(loaded.score_samples(x), guard.score_samples(x))
    assert loaded.threshold_ == guard.threshold_
    assert loaded.config == guard.config and loaded.n_features_ == T
    assert loaded.centers_meta == guard.centers_meta and loaded.centers_hash == guard.centers_hash
    meta = json.loads((path / "detector.json").read_text())
    assert meta["kind"] == "SRIGuard" and meta["num_params"] == 3184
    # overwriting needs overwrite=True, then works and leaves no temporary siblings
    with pytest.raises(ValueError, match="already holds a detector; pass --overwrite"):
        guard.save(path)
    guard.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guard"]
    assert np.array_equal(SRIGuard.load(path).score_samples(x), guard.score_samples(x))


def test_failed_save_keeps_existing_checkpoint(guard, data, tmp_path, monkeypatch):
    path = guard.save(tmp_path / "guard")
    before = sorted(p.relative_to(path) for p in path.rglob("*"))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ae, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        guard.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guard"]
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    x = data["b_test"][:50]
    assert np.array_equal(SRIGuard.load(path).score_samples(x), guard.score_samples(x))


def test_relative_path_and_load_errors(guard, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # orbax itself rejects relative paths; save/load must not
    guard.save("rel_guard")
    assert SRIGuard.load("rel_guard").threshold_ == guard.threshold_
    with pytest.raises(FileNotFoundError, match="no SRIGuard checkpoint"):
        SRIGuard.load(tmp_path / "missing")
    path = guard.save(tmp_path / "g")
    with pytest.raises(ValueError, match="holds a 'SRIGuard', not a SRIClassifier"):
        SRIClassifier.load(path)


def test_centers_mismatch(guard, tmp_path):
    guard.check_centers(make_centers())  # the centers it was trained against
    with pytest.raises(CentersMismatchError, match="metadata dict cannot be verified"):
        guard.check_centers(META)
    guard.check_centers(META, allow_unverified=True)  # explicit: metadata keys only
    with pytest.raises(CentersMismatchError, match="weight_hash: centers 'zzz' vs detector "
                                                   "'abc123'"):
        guard.check_centers(make_centers({**META, "weight_hash": "zzz"}))
    with pytest.raises(CentersMismatchError, match="sampler config differs: temperature"):
        guard.check_centers(make_centers({**META, "sampler": {**META["sampler"],
                                                              "temperature": 0.7}}))
    with pytest.raises(CentersMismatchError, match="layer: centers 'middle' vs detector 'last'"):
        guard.check_centers({**META, "layer": "middle"}, allow_unverified=True)
    with pytest.raises(CentersMismatchError, match="center arrays differ"):
        guard.check_centers(make_centers(seed=1))
    short = Centers(np.ones((16, 8), np.float32), np.zeros((16, 8), np.float32),
                    {**META, "steps": 16})
    with pytest.raises(CentersMismatchError, match="T=16 steps.*steps: centers 16 vs detector 32"):
        guard.check_centers(short)
    path = guard.save(tmp_path / "g")
    SRIGuard.load(path, centers=make_centers())
    with pytest.raises(CentersMismatchError, match="weight_hash"):
        SRIGuard.load(path).check_centers(make_centers({**META, "weight_hash": "other"}))


# ------------------------------------------------------------------------------ supervised

def test_classifier(data, tmp_path):
    x = np.concatenate([data["train"][:400], attack(400, 11)])
    y = np.r_[np.zeros(400), np.ones(400)]
    clf = SRIClassifier(epochs=100).fit(x, y, centers_meta=META)
    xt = np.concatenate([data["b_test"], data["a_test"]])
    m = evaluate_scores(clf.decision_function(data["b_test"]),
                        clf.decision_function(data["a_test"]), 0.0)
    assert m["auroc"] > 0.95
    p = clf.predict_proba(xt)
    # oracle: sigmoid of the float64 numpy MLP's logit; probabilities in (0, 1), fp32 logits
    # of magnitude <~ 20 are off by <~ 1e-5, which moves p by <= 1e-5 / 4
    want = 1.0 / (1.0 + np.exp(-np_mlp(clf.params_, xt.astype(np.float32))[:, 0]))
    np.testing.assert_allclose(p[:, 1], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(p[:, 0], 1.0 - want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(xt), p[:, 1] > 0.5)
    fn, params, thr = clf.as_pure()
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(params, xt.astype(np.float32))), want,
                               rtol=0, atol=1e-5)
    path = clf.save(tmp_path / "clf")
    back = SRIClassifier.load(path)
    assert np.array_equal(back.decision_function(xt), clf.decision_function(xt))
    assert back.threshold_ == 0.5 and back.centers_meta == clf.centers_meta
    with pytest.raises(ValueError, match="single class"):
        SRIClassifier().fit(x, np.zeros(800))
    with pytest.raises(ValueError, match="labels must have shape"):
        SRIClassifier().fit(x, y[:10])


# ------------------------------------------------------------------------------ metrics

def test_metrics_hand_cases():
    m = evaluate_scores([0.1, 0.2, 0.3], [0.7, 0.8, 0.9], threshold=0.5)
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0 and m["tpr"] == 1.0 and m["fpr"] == 0.0
    assert evaluate_scores([0.7, 0.8], [0.1, 0.2], 0.5)["auroc"] == 0.0
    # ranking 3(+) 2(-) 1(+) 0(-): AP = 1/2 * 1 + 1/2 * 2/3
    m = evaluate_scores([2.0, 0.0], [3.0, 1.0], threshold=1.5)
    assert m["auprc"] == pytest.approx(0.5 + 1.0 / 3.0)
    assert m["auroc"] == pytest.approx(0.75) and m["tpr"] == 0.5 and m["fpr"] == 0.5
    b, a = [0.1, 0.4, 0.4, 0.5, 0.9], [0.4, 0.6, 0.95, 0.2]
    assert evaluate_scores(b, a, 0.5)["auroc"] == pytest.approx(mann_whitney_auc(b, a))


def test_tpr_at_fpr_hand_example():
    benign_scores = np.arange(10) / 10.0  # 0.0 .. 0.9
    attack_scores = np.array([0.85, 0.95, 0.75, 1.5])
    # 10% FPR on 10 benign: at most 1 benign above -> threshold = 2nd largest = 0.8
    assert threshold_at_fpr(benign_scores, 0.10) == 0.8
    assert tpr_at_fpr(benign_scores, attack_scores, 0.10) == 0.75  # 0.85, 0.95, 1.5
    # 5% of 10 -> floor 0 benign allowed above -> threshold = max = 0.9
    assert tpr_at_fpr(benign_scores, attack_scores, 0.05) == 0.5  # 0.95, 1.5
    benign100 = np.arange(100) / 100.0
    m = evaluate_scores(benign100, [0.985, 0.975, 0.5, 2.0], threshold=0.9)
    assert m["threshold_at_1pct_fpr"] == 0.98 and m["realised_fpr_at_1pct"] == 0.01
    assert m["tpr_at_1pct_fpr"] == 0.5  # 0.985, 2.0
    assert m["threshold_at_5pct_fpr"] == 0.94 and m["tpr_at_5pct_fpr"] == 0.75
    assert m["tpr"] == 0.75 and m["fpr"] == pytest.approx(0.09)


def test_refusal_with_guard():
    r = refusal_with_guard([True, False, False, True], [False, True, False, True])
    np.testing.assert_array_equal(r, [True, True, False, True])
    assert r.mean() == 0.75
    with pytest.raises(ValueError, match="same length"):
        refusal_with_guard([True], [True, False])
    with pytest.raises(ValueError, match="finite"):
        evaluate_scores([np.nan, 0.1], [0.2], 0.5)


def test_sklearn_estimator_conventions(guard, data):
    """get_params / set_params / sklearn.base.clone: the clone is unfitted, has the same
    parameters, and refitting it on the same data reproduces the fitted guard's weights
    (training is seeded). A bad value is refused by set_params as by the constructor."""
    from sklearn.base import clone

    g = SRIGuard(hidden=(8, 4), epochs=5, seed=3)
    assert g.get_params() == {"activation": "tanh", "batch_size": 64, "epochs": 5,
                              "hidden": (8, 4), "learning_rate": 3e-3, "quantile": 0.99,
                              "seed": 3, "weight_decay": 1e-4}
    c = clone(guard)
    assert c.get_params() == guard.get_params() and c is not guard
    with pytest.raises(NotFittedError):
        c.score_samples(data["b_test"][:2])
    c.fit(data["train"])
    for a, b in zip(c.params_["layers"], guard.params_["layers"]):
        assert np.array_equal(a["kernel"], b["kernel"]) and np.array_equal(a["bias"], b["bias"])
    assert c.threshold_ == guard.threshold_
    assert g.set_params(epochs=7) is g and g.config.epochs == 7
    with pytest.raises(ValueError, match="quantile"):
        g.set_params(quantile=2.0)
    k = clone(SRIClassifier(epochs=3, threshold=0.7))
    assert k.get_params()["threshold"] == 0.7 and k.config.threshold == 0.7


def test_scoring_runs_the_trained_module_without_copying_weights(guard, data, monkeypatch):
    """score_samples, decision_function and as_pure read the fitted Flax module directly:
    with the numpy copy (``params_``, what ``save`` writes) disabled they still give the
    float64 numpy oracle's scores."""
    x = data["a_test"][:50]
    oracle = np_guard_score(guard.params_, x)
    monkeypatch.setattr(ae.MLP, "plain_params", lambda self: pytest.fail("weights copied"))
    np.testing.assert_allclose(guard.score_samples(x), oracle, rtol=SCORE_RTOL,
                               atol=SCORE_ATOL)
    np.testing.assert_allclose(guard.threshold_ - guard.decision_function(x), oracle,
                               rtol=SCORE_RTOL, atol=SCORE_ATOL)
    fn, params, _ = guard.as_pure()
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(params, x.astype(np.float32))), oracle,
                               rtol=SCORE_RTOL, atol=SCORE_ATOL)
