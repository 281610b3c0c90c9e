"""Fused samplers against plain step-by-step loops (tests/oracles.py) and numpy SRI math.

Models are tiny random fp32 decoders; weights are scaled up (init_std 0.5) so logits are
far from uniform and argmax/top-k decisions are not decided by rounding noise. Tokens must
match exactly; the pooled activations phi (magnitude ~20) within tests/tolerance.py's fp32
bound of the oracle's; sigma within 1e-5 of the float64 numpy formula applied to the returned
phi (same input, so only fp32-vs-float64 rounding of a value in (0, 1) remains).
"""

import numpy as np
import pytest

from oracles import ar_loop, dream_loop, llada_loop, np_sri
from sri_jax.models.config import ModelConfig
from sri_jax.models.decoder import random_params
from sri_jax.models.model import Model
from sri_jax.sampling import SamplerConfig, generate
from sri_jax.sampling import api as sampling_api
from sri_jax.sri import Centers, sri_signal
from tolerance import assert_fp32_close

D = 32
DIFF_CFG = ModelConfig(family="llada", vocab_size=96, hidden_size=D, intermediate_size=64,
                       num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8, causal=False,
                       mask_token_id=95, eos_token_id=1, eot_token_id=2, pad_token_id=1,
                       rope_theta=500000.0, rope_fp32_apply=True)
AR_CFG = ModelConfig(family="llama", vocab_size=96, hidden_size=D, intermediate_size=64,
                     num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8, eos_token_id=1,
                     pad_token_id=0)

IDS = np.array([[5, 6, 7, 8, 9, 10], [1, 1, 1, 11, 12, 13], [1, 14, 15, 16, 17, 18]])
MASK = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]])


@pytest.fixture(scope="module")
def diff_model():
    return Model(DIFF_CFG, random_params(DIFF_CFG, seed=1, init_std=0.5), name="tiny-llada")


@pytest.fixture(scope="module")
def ar_model():
    return Model(AR_CFG, random_params(AR_CFG, seed=2, init_std=0.5), name="tiny-llama")


def centers_for(steps, seed=0):
    rng = np.random.default_rng(seed)
    return Centers(rng.normal(size=(steps, D)).astype(np.float32),
                   rng.normal(size=(steps, D)).astype(np.float32))


@pytest.mark.parametrize("steps,gen,block", [(8, 16, 16), (8, 16, 8), (16, 16, 4), (6, 12, 12)])
def test_diffusion_matches_plain_loop(diff_model, steps, gen, block):
    cfg = SamplerConfig(steps=steps, gen_length=gen, block_length=block)
    centers = centers_for(steps)
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, centers=centers,
                   return_activations=True)
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=steps, gen_length=gen,
                             block_length=block)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)
    np.testing.assert_allclose(res.sri, np_sri(res.activations, centers.harmless[None],
                                                 centers.harmful[None]), atol=1e-5)
    assert (res.tokens != DIFF_CFG.mask_token_id).all()  # every position committed


@pytest.mark.parametrize("kw", [dict(temperature=0.7), dict(remasking="random"),
                                dict(temperature=1.0, remasking="random"), dict(cfg_scale=1.5),
                                dict(pooling="committed")])
def test_diffusion_options_match_plain_loop(diff_model, kw):
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8, **kw)
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=3,
                   return_activations=True)
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=8, gen_length=16, block_length=8,
                             seed=3, **kw)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)


def test_diffusion_middle_layer_and_ar_on_diffusion(diff_model):
    cfg = SamplerConfig(steps=8, gen_length=8, mode="ar_on_diffusion", layer="first")
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                   return_activations=True)
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=8, gen_length=8, block_length=1,
                             layer="first")
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)


def test_padding_does_not_change_a_row(diff_model, ar_model):
    """A row gives the same tokens alone and inside a left-padded batch (bucketed)."""
    for model, cfg in ((diff_model, SamplerConfig(steps=8, gen_length=8, block_length=8)),
                       (ar_model, SamplerConfig.autoregressive(gen_length=8))):
        batch = generate(model, input_ids=IDS, attention_mask=MASK, cfg=cfg)
        alone = generate(model, input_ids=IDS[1:2, 3:], cfg=cfg)
        np.testing.assert_array_equal(batch.tokens[1], alone.tokens[0])


def test_ar_kv_cache_matches_full_recomputation(ar_model):
    gen = 10
    cfg = SamplerConfig.autoregressive(gen_length=gen)
    centers = centers_for(gen, seed=4)
    res = generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, centers=centers,
                   return_activations=True)
    tokens, phi = ar_loop(ar_model, IDS, MASK, gen_length=gen)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)
    np.testing.assert_allclose(res.sri, np_sri(res.activations, centers.harmless[None],
                                                 centers.harmful[None]), atol=1e-5)


def test_ar_eos_repeats_last_hidden_state():
    """Force EOS at step 3 (make token 1 dominant after a few steps): the trace keeps T
    steps, tokens after EOS are the pad id, and phi repeats the EOS-step hidden state."""
    params = random_params(AR_CFG, seed=5, init_std=0.5)
    model = Model(AR_CFG, params)
    # pick an EOS id that greedy decoding emits mid-way: run once, then declare it EOS
    probe = generate(model, input_ids=IDS[:1], cfg=SamplerConfig.autoregressive(gen_length=8))
    eos = int(probe.tokens[0, 3])
    cfg_eos = AR_CFG.replace(eos_token_id=eos, pad_token_id=0)
    model = Model(cfg_eos, params)
    res = generate(model, input_ids=IDS[:1], cfg=SamplerConfig.autoregressive(gen_length=8),
                   return_activations=True)
    first = int(np.argmax(res.tokens[0] == eos))
    assert first <= 3
    assert (res.tokens[0, first + 1:] == 0).all()
    tokens, phi = ar_loop(model, IDS[:1], MASK[:1], gen_length=8)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)


def test_ar_sampling_is_deterministic_per_seed(ar_model):
    cfg = SamplerConfig.autoregressive(gen_length=8, temperature=0.8, top_k=20, top_p=0.9)
    a = generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=7).tokens
    b = generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=7).tokens
    c = generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=8).tokens
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_sri_signal_matches_numpy():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(5, 7, 16)).astype(np.float32)
    c = Centers(rng.normal(size=(7, 16)), rng.normal(size=(7, 16)))
    np.testing.assert_allclose(sri_signal(phi, c), np_sri(phi, c.harmless[None], c.harmful[None]),
                               atol=1e-6)
    # phi on a center: distance 0 to it -> sigma saturates toward that side
    on_harmless = sri_signal(np.asarray(c.harmless)[None], c)
    assert (on_harmless > 0.999).all()


def test_second_call_same_bucket_does_not_recompile(ar_model):
    cfg = SamplerConfig.autoregressive(gen_length=4)
    generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg)
    n = sampling_api._sample._cache_size()
    generate(ar_model, input_ids=IDS[:, 2:] + 1, attention_mask=MASK[:, 2:], cfg=cfg, seed=9)
    assert sampling_api._sample._cache_size() == n


def test_bad_inputs(ar_model, diff_model):
    cfg = SamplerConfig.autoregressive(gen_length=4)
    with pytest.raises(ValueError, match="pass prompts"):
        generate(ar_model, cfg=cfg)
    with pytest.raises(ValueError, match="empty"):
        generate(ar_model, input_ids=np.zeros((0, 3), int), cfg=cfg)
    with pytest.raises(ValueError, match="context"):
        generate(ar_model, input_ids=np.ones((1, AR_CFG.max_position_embeddings), int), cfg=cfg)
    with pytest.raises(ValueError, match=r"T=4, D=32"):
        generate(ar_model, input_ids=IDS, cfg=cfg, centers=centers_for(5))
    with pytest.raises(ValueError, match="NaN"):
        Centers(np.full((4, D), np.nan), np.zeros((4, D)))
    with pytest.raises(ValueError, match="diffusion model"):
        generate(diff_model, input_ids=IDS, cfg=cfg)
    with pytest.raises(ValueError, match="autoregressive"):
        generate(ar_model, input_ids=IDS, cfg=SamplerConfig(steps=4, gen_length=4, block_length=4))


@pytest.mark.parametrize("kw,msg", [
    (dict(gen_length=10, block_length=4), "divisible by block_length"),
    (dict(steps=5, gen_length=16, block_length=8), "number of blocks"),
    (dict(mode="autoregressive", steps=8, gen_length=16), "must equal gen_length"),
    (dict(remasking="nope"), "remasking"),
])
def test_invalid_sampler_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SamplerConfig(**kw)


def test_jax_key_stream_is_explicit(diff_model):
    cfg = SamplerConfig(steps=8, gen_length=8, block_length=8, temperature=1.0)
    a = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=1).tokens
    b = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=2).tokens
    assert (a != b).any()


DREAM_CFG = DIFF_CFG.replace(family="dream", attention_bias=True, logits_shift=True,
                             rope_fp32_apply=False, rope_theta=1e6)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy", "origin"])
def test_dream_matches_plain_loop(alg):
    model = Model(DREAM_CFG, random_params(DREAM_CFG, seed=6, init_std=0.5))
    cfg = SamplerConfig(steps=6, gen_length=12, block_length=12, dream_alg=alg)
    res = generate(model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=2,
                   return_activations=True)
    tokens, phi = dream_loop(model, IDS, MASK, steps=6, gen_length=12, alg=alg, seed=2)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)
    assert (res.tokens != DREAM_CFG.mask_token_id).all()


def test_bucket_lengths_and_memory_aware_batch_plan():
    from sri_jax.sampling.api import bucket_length, plan_batches

    assert [bucket_length(n, 8192) for n in (1, 17, 256, 257, 1000, 1424, 4096, 4097)] == \
        [16, 32, 256, 384, 1024, 1536, 4096, 8192]
    assert bucket_length(5000, 6000) == 6000 and bucket_length(7000, 6000) == 7000
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 60, 50)) + list(rng.integers(900, 1500, 13))
    plan = plan_batches(lengths, 16, 8192, max_tokens=4096)
    flat = [i for idx, _ in plan for i in idx]
    assert sorted(flat) == list(range(len(lengths)))              # every prompt exactly once
    assert [lengths[i] for i in flat] == sorted(lengths)          # length-sorted, stable
    for idx, rows in plan:
        bucket = bucket_length(max(lengths[i] for i in idx), 8192)
        assert len(idx) <= rows <= 16 and (rows * bucket <= 4096 or rows == 1)
        full = min(16, 4096 // bucket)                            # one row count per bucket,
        assert rows == full or (rows < full and rows == 1 << (len(idx) - 1).bit_length())
    assert plan[0][1] == 16 and plan[-2][1] == 2 and plan[-1][1] == 1  # 1536 tokens: 2 rows
    assert plan_batches([3, 1, 2], 2, 100) == [([1, 2], 2), ([0], 1)]
    # a set smaller than batch_size is padded to the next power of two only
    assert plan_batches([5] * 5, 64, 100) == [([0, 1, 2, 3, 4], 8)]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([1], 0, 100)
