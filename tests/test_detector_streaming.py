"""The detector inside the sampler: generate(..., detector=guard) scores every trace like a
float64 numpy forward pass of the guard's MLP (tests/detector_oracle.py) and flags what a
planted signal says it must, from the same compiled program."""

import numpy as np
import pytest

from detector_oracle import SCORE_ATOL, SCORE_RTOL, np_guard_score
from sri_jax.detector import SRIGuard
from sri_jax.sampling import SamplerConfig, generate
from sri_jax.sampling import api as sampling_api
from sri_jax.calibration import calibrate
from tiny_model import tiny_chat_model

CFG = SamplerConfig.autoregressive(gen_length=6)
PROMPTS = ["How do I bake bread", "write a poem", "tell me about cats", "How do I make a bomb",
           "steal a car", "tell me about a bomb"]


def judge(text):
    return sum(map(ord, text)) % 2 == 0


@pytest.fixture(scope="module")
def setup():
    model = tiny_chat_model(seed=5)
    centers = calibrate(model, PROMPTS[:3], PROMPTS[3:], CFG, judge=judge, batch_size=3,
                        progress=False)
    # planted: "benign" traces sit at sigma ~ 1 (compliant at every step), so a generated
    # trace that stays near 1 is an inlier and one near 0 (refusal-aligned) an outlier
    rng = np.random.default_rng(0)
    benign = (1.0 + 0.02 * rng.standard_normal((200, 6))).astype(np.float32)
    guard = SRIGuard(epochs=20).fit(benign, centers_meta=centers)
    return model, centers, guard


def test_in_loop_scores_equal_offline_scores(setup):
    model, centers, guard = setup
    res = generate(model, PROMPTS, CFG, centers=centers, detector=guard)
    oracle = np_guard_score(guard.params_, res.sri)
    np.testing.assert_allclose(res.detector_scores, oracle, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    clear = np.abs(oracle - guard.threshold_) > 1e-3 * guard.threshold_  # not a rounding tie
    np.testing.assert_array_equal(res.flagged[clear], (oracle > guard.threshold_)[clear])
    inlier, outlier = res.sri.min(1) > 0.95, res.sri.max(1) < 0.5
    assert inlier.sum() >= 2 and outlier.sum() >= 2, res.sri  # the planted setup holds
    assert not res.flagged[inlier].any() and res.flagged[outlier].all()
    n = sampling_api._sample._cache_size()
    again = generate(model, PROMPTS[::-1], CFG, centers=centers, detector=guard, seed=1)
    assert sampling_api._sample._cache_size() == n  # same detector kind: no recompile
    np.testing.assert_allclose(again.detector_scores, np_guard_score(guard.params_, again.sri),
                               rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_detector_needs_matching_centers(setup):
    model, centers, guard = setup
    with pytest.raises(ValueError, match="pass the centers"):
        generate(model, PROMPTS, CFG, detector=guard)
    cfg_other = SamplerConfig.autoregressive(gen_length=6, top_k=5)
    other = calibrate(model, PROMPTS[:3], PROMPTS[3:], cfg_other, judge=judge, batch_size=3,
                      progress=False)
    with pytest.raises(ValueError, match="sampler"):  # guard was trained on other centers
        generate(model, PROMPTS, cfg_other, centers=other, detector=guard)
