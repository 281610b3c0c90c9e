"""Cached and threshold decoding of Dream-style models (sampling/fast_diffusion.py).

Tiny random fp32 Dream (tests/test_sampling.py's DREAM_CFG: shifted logits, init_std 0.5 so
that argmax/top-k decisions are not decided by rounding). The expectation is
tests/oracles.py's ``dream_block_loop``, a plain float64 loop of Fast-dLLM's block-wise Dream
sampler with its cache recomputed before every step: with the cache refreshed every step the
cached samplers must reproduce it (the forward over cached keys/values is then the full
forward). Fast-dLLM's block mode is not Dream's exact sampler, even with one block: a block's
first step commits only the block's first position, and the schedule restarts per block, so
the exact sampler is no expectation here (checked below that they differ). Tolerances as in
test_fast_diffusion.py: tokens and NFE exact; phi (magnitude ~20) within tests/tolerance.py's
fp32 bound; sigma within 1e-5 (fp32 inputs that agree to ~1e-6 relative).
"""

import numpy as np
import pytest

from oracles import dream_block_loop, dream_loop, np_sri
from sri_jax.models.decoder import random_params
from sri_jax.models.model import Model
from sri_jax.sampling import SamplerConfig, generate
from test_fast_diffusion import assert_batch_invariant, assert_one_compile, run
from test_sampling import DREAM_CFG, IDS, MASK, centers_for
from tolerance import assert_fp32_close


@pytest.fixture(scope="module")
def model():
    return Model(DREAM_CFG, random_params(DREAM_CFG, seed=6, init_std=0.5), name="tiny-dream")


def check(model, cfg, refresh=True, alg="maskgit_plus"):
    """The port against the block loop: tokens, NFE, phi and sigma."""
    centers = centers_for(cfg.steps)
    tokens, sri, phi, snaps, nfe = run(model, cfg, centers=centers, refresh=refresh)
    ref_tokens, ref_phi, ref_nfe = dream_block_loop(
        model, IDS, MASK, gen_length=cfg.gen_length, block_length=cfg.block_length,
        steps=cfg.steps, alg=alg, threshold=cfg.threshold)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_array_equal(nfe, ref_nfe)
    assert_fp32_close(phi, ref_phi)
    np.testing.assert_allclose(sri, np_sri(ref_phi, centers.harmless, centers.harmful),
                               atol=1e-5)
    np.testing.assert_array_equal(snaps[:, -1], tokens)
    return tokens, nfe


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("steps,gen,block,alg", [(8, 16, 8, "entropy"),
                                                 (12, 12, 4, "topk_margin"),
                                                 (8, 16, 16, "maskgit_plus")])
def test_cache_refreshed_every_step_is_the_block_loop(model, cache, steps, gen, block, alg):
    cfg = SamplerConfig(steps=steps, gen_length=gen, block_length=block, cache=cache,
                        dream_alg=alg)
    _, nfe = check(model, cfg, alg=alg)
    np.testing.assert_array_equal(nfe, steps)


def test_one_block_is_not_the_exact_sampler(model):
    """Upstream's block mode with one block differs from Dream's own sampler: its first step
    commits the first response position only (Dream's commits floor(G (1 - s/t)) ranked by
    confidence), so the premise 'one block = exact' does not hold and is not asserted."""
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=16, cache="dual")
    tokens = run(model, cfg, refresh=True)[0]
    exact = dream_loop(model, IDS, MASK, steps=8, gen_length=16)[0]
    assert (tokens != exact).any()


def test_stale_cache_changes_the_result(model):
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8)
    _, ref_phi, _ = dream_block_loop(model, IDS, MASK, gen_length=16, block_length=8,
                                     steps=8, alg="maskgit_plus")
    for cache in ("prefix", "dual"):
        assert np.abs(run(model, cfg.replace(cache=cache))[2] - ref_phi).max() > 1e-2


@pytest.mark.parametrize("threshold,cache,alg", [(1.0, "none", "maskgit_plus"),
                                                 (1.0, "dual", "maskgit_plus"),
                                                 (0.3, "prefix", "maskgit_plus"),
                                                 (0.2, "none", "topk_margin")])
def test_threshold_matches_the_block_loop(model, threshold, cache, alg):
    """threshold 1.0 (never exceeded): one token per step, NFE = gen_length; lower ones
    commit several tokens in some step."""
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8, threshold=threshold,
                        cache=cache, dream_alg=alg)
    _, nfe = check(model, cfg, alg=alg)
    if threshold == 1.0:
        np.testing.assert_array_equal(nfe, 16)
    else:
        assert (nfe < 16).any()


@pytest.mark.parametrize("kw", [dict(cache="prefix"), dict(cache="dual", dream_alg="entropy"),
                                dict(threshold=0.3), dict(cache="dual", threshold=0.3),
                                dict(cache="prefix", threshold=0.2, dream_alg="topk_margin")])
def test_batch_invariance(model, kw):
    assert_batch_invariant(model, SamplerConfig(steps=8, gen_length=16, block_length=8, **kw))


@pytest.mark.parametrize("kw", [dict(cache="dual"), dict(cache="prefix", threshold=0.5)])
def test_one_compile_per_configuration(model, kw):
    assert_one_compile(model, SamplerConfig(steps=8, gen_length=16, block_length=8, **kw))


@pytest.mark.parametrize("kw,msg", [
    (dict(cache="dual", dream_alg="origin"), "dream_alg 'origin' reveals positions at random"),
    (dict(threshold=0.9, dream_alg="entropy"), "dream_alg 'entropy' scores by negative"),
    (dict(threshold=0.9, dream_alg_temp=0.5), "leave dream_alg_temp at 0"),
    (dict(cache="prefix", steps=2, block_length=8), "needs >= 2 steps: raise steps"),
    (dict(block_length=8), "Dream models sample one block")])
def test_unsupported_combinations_are_refused(model, kw, msg):
    cfg = SamplerConfig(**{**dict(steps=4, gen_length=16, block_length=16), **kw})
    with pytest.raises(ValueError, match=msg):
        generate(model, input_ids=IDS, attention_mask=MASK, cfg=cfg)
