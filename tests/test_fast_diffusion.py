"""Cached and threshold diffusion decoding (sampling/fast_diffusion.py) against the oracles.

Tiny random fp32 LLaDA (tests/test_sampling.py's, init_std 0.5 so argmax/top-k decisions are
not decided by rounding). The exact expectations are tests/oracles.py's plain loops: with the
cache recomputed before every step a cached sampler must reproduce LLaDA's loop (the partial
forward over cached keys/values is then the full forward); threshold decoding is checked
against a plain Fast-dLLM threshold loop that also reads phi at the T committed-fraction
points with np.interp. Tolerances: tokens exact; phi (magnitude ~20) within
tests/tolerance.py's fp32 bound; sigma within 1e-5 (a value in (0, 1) from fp32 inputs that
agree to ~1e-6 relative, as in test_sampling.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oracles import llada_loop, llada_threshold_loop, np_sri
from sri_jax.models.decoder import random_params
from sri_jax.models.model import Model
from sri_jax.sampling import SamplerConfig, generate
from sri_jax.sampling import api as sampling_api
from sri_jax.sampling.common import Probe, Reads
from sri_jax.sampling.fast_diffusion import fast_diffusion_sample, grid_points
from test_sampling import DIFF_CFG, IDS, MASK, centers_for
from tolerance import assert_fp32_close

MODES = [dict(), dict(cache="prefix"), dict(cache="dual"), dict(threshold=0.5),
         dict(cache="prefix", threshold=0.6), dict(cache="dual", threshold=0.7)]


@pytest.fixture(scope="module")
def model():
    return Model(DIFF_CFG, random_params(DIFF_CFG, seed=1, init_std=0.5), name="tiny-llada")


def run(model, cfg, ids=IDS, mask=MASK, centers=None, refresh=False, layer=None):
    probe = Probe() if centers is None else Probe(*map(jnp.asarray, centers.device_arrays()))
    hl = None if layer is None else model.config.resolve_layer(layer)
    tokens, sri, recs, nfe = fast_diffusion_sample(
        model.params, model.config, cfg, jnp.asarray(ids), jnp.asarray(mask),
        jax.random.key(0), probe, reads=Reads(hl, activations=True, snapshots=True),
        refresh_each_step=refresh)
    return tuple(map(np.asarray, (tokens, sri, recs.phi, recs.snapshot, nfe)))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("steps,gen,block,kw", [(8, 16, 8, {}), (12, 12, 4, {}),
                                                (8, 16, 16, dict(pooling="committed")),
                                                (8, 16, 8, dict(layer="first")),
                                                (16, 8, 8, {})])
def test_cache_refreshed_every_step_is_the_exact_sampler(model, cache, steps, gen, block, kw):
    cfg = SamplerConfig(steps=steps, gen_length=gen, block_length=block, cache=cache, **kw)
    centers = centers_for(steps)
    tokens, sri, phi, snaps, nfe = run(model, cfg, centers=centers, refresh=True,
                                       layer=kw.get("layer"))
    ref_tokens, ref_phi = llada_loop(model, IDS, MASK, steps=steps, gen_length=gen,
                                     block_length=block, **kw)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert_fp32_close(phi, ref_phi)
    np.testing.assert_allclose(sri, np_sri(ref_phi, centers.harmless, centers.harmful),
                               atol=1e-5)
    np.testing.assert_array_equal(snaps[:, -1], tokens)
    np.testing.assert_array_equal(nfe, steps)


def test_stale_cache_changes_the_result(model):
    """Without the refresh the cached steps really read the block-start keys/values."""
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8)
    _, ref_phi = llada_loop(model, IDS, MASK, steps=8, gen_length=16, block_length=8)
    for cache in ("prefix", "dual"):
        phi = run(model, cfg.replace(cache=cache))[2]
        assert np.abs(phi - ref_phi).max() > 1e-2


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_threshold_one_is_one_token_per_step(model, cache):
    """threshold 1.0 (confidence never exceeds it) = the exact sampler with steps = gen."""
    cfg = SamplerConfig(steps=16, gen_length=16, block_length=8, threshold=1.0, cache=cache)
    centers = centers_for(16)
    tokens, sri, phi, snaps, nfe = run(model, cfg, centers=centers, refresh=True)
    ref_tokens, ref_phi = llada_loop(model, IDS, MASK, steps=16, gen_length=16, block_length=8)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert_fp32_close(phi, ref_phi)
    np.testing.assert_allclose(sri, np_sri(ref_phi, centers.harmless, centers.harmful),
                               atol=1e-5)
    np.testing.assert_array_equal(nfe, 16)


@pytest.mark.parametrize("threshold,cache", [(0.5, "none"), (0.3, "none"), (0.5, "prefix")])
def test_threshold_decoding_matches_plain_loop(model, threshold, cache):
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8, threshold=threshold,
                        cache=cache)
    tokens, _, phi, _, nfe = run(model, cfg, refresh=True)
    ref_tokens, ref_phi, ref_nfe = llada_threshold_loop(
        model, IDS, MASK, gen_length=16, block_length=8, threshold=threshold, steps=8)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_array_equal(nfe, ref_nfe)
    assert (nfe < 16).any()  # several tokens per step somewhere: the threshold did act
    assert_fp32_close(phi, ref_phi)


def test_grid_points_hand_computed():
    # T = 4 points over G = 8 committed tokens sit at 2, 4, 6, 8; steps 0 -> 3 -> 8.
    hit, alpha = grid_points(jnp.array([0, 3]), jnp.array([3, 8]), 8, 4)
    np.testing.assert_array_equal(hit, [[1, 0, 0, 0], [0, 1, 1, 1]])
    np.testing.assert_allclose(np.asarray(alpha)[0, 0], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha)[1, 1:], [1 / 5, 3 / 5, 1.0], rtol=1e-6)


def assert_batch_invariant(model, cfg):
    """A row alone (no padding) and inside batches of 3 and 5 rows left-padded to 6 and 10
    tokens: same tokens, NFE and sigma (1e-5)."""
    centers = centers_for(cfg.steps)
    row = IDS[1:2, 3:]
    alone = run(model, cfg, row, np.ones_like(row), centers)
    ids5 = np.pad(np.concatenate([IDS, IDS[:2]]), ((0, 0), (4, 0)), constant_values=1)
    mask5 = np.pad(np.concatenate([MASK, MASK[:2]]), ((0, 0), (4, 0)))
    for ids, mask in ((IDS, MASK), (ids5, mask5)):
        batch = run(model, cfg, ids, mask, centers)
        for i in (1, 4) if len(ids) == 5 else (1,):
            np.testing.assert_array_equal(batch[0][i], alone[0][0])
            np.testing.assert_array_equal(batch[4][i], alone[4][0])
            np.testing.assert_allclose(batch[1][i], alone[1][0], atol=1e-5)


def assert_one_compile(model, cfg):
    """A second call with other prompts, centers and seed reuses the first one's program."""
    n = sampling_api._sample._cache_size()
    a = generate(model, input_ids=IDS, attention_mask=MASK, cfg=cfg, centers=centers_for(8))
    assert sampling_api._sample._cache_size() == n + 1
    b = generate(model, input_ids=IDS[:, ::-1] + 1, attention_mask=MASK, cfg=cfg,
                 centers=centers_for(8, seed=1), seed=3)
    assert sampling_api._sample._cache_size() == n + 1
    assert a.sri.shape == b.sri.shape == (3, 8)


@pytest.mark.parametrize("kw", MODES)
def test_batch_invariance(model, kw):
    assert_batch_invariant(model, SamplerConfig(steps=8, gen_length=16, block_length=8, **kw))


@pytest.mark.parametrize("kw", MODES[1:])
def test_one_compile_per_configuration(model, kw):
    assert_one_compile(model, SamplerConfig(steps=8, gen_length=16, block_length=8, **kw))


def test_invalid_fast_configs_are_listed_at_once():
    with pytest.raises(ValueError) as e:
        SamplerConfig(cache="full", threshold=1.5)
    assert "cache 'full'" in str(e.value) and "threshold must be in (0, 1]" in str(e.value)
    for kw in (dict(cfg_scale=1.0), dict(mode="ar_on_diffusion", steps=128)):
        with pytest.raises(ValueError, match="needs mode='diffusion' and cfg_scale 0"):
            SamplerConfig(cache="dual", **kw)
    with pytest.raises(ValueError, match="threshold must be"):
        SamplerConfig(threshold=float("nan"))


def test_threshold_stops_when_a_row_keeps_committing_the_mask_id():
    """Untrained weights may predict the mask id; committing it leaves the position masked.
    The block then ends after block_length steps instead of looping forever."""
    cfg = DIFF_CFG.replace(vocab_size=4, mask_token_id=0, pad_token_id=1, num_layers=1)
    params = random_params(cfg, seed=0, init_std=0.5)
    params["lm_head"] = params["lm_head"] * 0  # every logit 0: the argmax is id 0, the mask
    scfg = SamplerConfig(steps=4, gen_length=8, block_length=4, threshold=0.9)
    tokens, _, _, nfe = fast_diffusion_sample(params, cfg, scfg, jnp.array([[1, 2, 1]]),
                                              jnp.ones((1, 3), jnp.int32), jax.random.key(0),
                                              Probe())
    np.testing.assert_array_equal(tokens, 0)
    np.testing.assert_array_equal(nfe, 8)  # 4 steps in each of the 2 blocks
