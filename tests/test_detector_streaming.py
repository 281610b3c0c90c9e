"""The detector inside the sampler: generate(..., detector=guard) returns the same scores and
flags as scoring the returned traces afterwards, from the same compiled program."""

import numpy as np
import pytest

from sri_jax.detector import SRIGuard
from sri_jax.sampling import SamplerConfig, generate
from sri_jax.sampling import api as sampling_api
from sri_jax.sri.centers import calibrate
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
    rng = np.random.default_rng(0)
    benign = np.clip(0.7 + 0.1 * rng.standard_normal((200, 6)), 0, 1).astype(np.float32)
    guard = SRIGuard(epochs=20).fit(benign, centers_meta=centers)
    return model, centers, guard


def test_in_loop_scores_equal_offline_scores(setup):
    model, centers, guard = setup
    res = generate(model, PROMPTS, CFG, centers=centers, detector=guard)
    np.testing.assert_allclose(res.detector_scores, guard.score_samples(res.sri), rtol=1e-6)
    np.testing.assert_array_equal(res.flagged, guard.predict(res.sri))
    n = sampling_api._sample._cache_size()
    again = generate(model, PROMPTS[::-1], CFG, centers=centers, detector=guard, seed=1)
    assert sampling_api._sample._cache_size() == n  # same detector kind: no recompile
    np.testing.assert_array_equal(again.flagged, guard.predict(again.sri))


def test_detector_needs_matching_centers(setup):
    model, centers, guard = setup
    with pytest.raises(ValueError, match="pass the centers"):
        generate(model, PROMPTS, CFG, detector=guard)
    cfg_other = SamplerConfig.autoregressive(gen_length=6, top_k=5)
    other = calibrate(model, PROMPTS[:3], PROMPTS[3:], cfg_other, judge=judge, batch_size=3,
                      progress=False)
    with pytest.raises(ValueError, match="sampler"):  # guard was trained on other centers
        generate(model, PROMPTS, cfg_other, centers=other, detector=guard)
