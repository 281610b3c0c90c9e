"""Fused samplers against plain step-by-step loops (tests/oracles.py) and numpy SRI math.

Models are tiny random fp32 decoders; weights are scaled up (init_std 0.5) so logits are
far from uniform and argmax/top-k decisions are not decided by rounding noise. Tokens must
match exactly; the pooled activations phi (magnitude ~20) within tests/tolerance.py's fp32
bound of the oracle's; sigma within 1e-5 of the float64 numpy formula applied to the returned
phi (same input, so only fp32-vs-float64 rounding of a value in (0, 1) remains).

Random sampling (temperature > 0, random remasking, Dream's origin reveals and alg_temp):
the oracles follow upstream's formulas (float64 ``exp(logits) / (-log u) ** T``, torch's
multinomial ``p / E``) and the port its own (fp32 log-space Gumbel-max), so they cannot share
a key stream without the oracle copying the port. Both are fed the SAME uniforms instead,
drawn here with numpy and passed explicitly (the samplers' ``noise=``); equal tokens then
prove the two formulations make the same decision draw for draw. The key path that draws
those uniforms in production is checked separately against the exact sampling distribution
(``test_*_key_path_samples_the_right_distribution``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oracles import ar_loop, dream_loop, dream_sample_tokens, llada_loop, np_sri, top_k_logits, \
    top_p_logits
from sri_jax.models.config import ModelConfig
from sri_jax.models.decoder import random_params
from sri_jax.models.model import Model
from sri_jax.sampling import Readout, SamplerConfig, generate
from sri_jax.sampling import api as sampling_api
from sri_jax.sampling.common import Probe, Reads, StepNoise, filter_logits
from sri_jax.sampling.diffusion import diffusion_sample
from sri_jax.sampling.dream import dream_sample
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
                   readout=Readout(activations=True))
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=steps, gen_length=gen,
                             block_length=block)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)
    np.testing.assert_allclose(res.sri, np_sri(res.activations, centers.harmless[None],
                                                 centers.harmful[None]), atol=1e-5)
    assert (res.tokens != DIFF_CFG.mask_token_id).all()  # every position committed


def np_noise(steps, n, vocab, seed, b=len(IDS)):
    """Uniforms in (0, 1) for every step: tok [T, B, n, V] and pos [T, B, n] (numpy)."""
    rng = np.random.default_rng(seed)
    u = lambda *shape: rng.uniform(1e-6, 1 - 1e-6, shape).astype(np.float32)  # noqa: E731
    return StepNoise(u(steps, b, n, vocab), u(steps, b, n))


def port(model, cfg, noise, sampler=diffusion_sample):
    """The fused sampler fed ``noise``: (tokens [B, G], phi [B, T, D]) as numpy."""
    tokens, _, recs = sampler(model.params, model.config, cfg, jnp.asarray(IDS),
                              jnp.asarray(MASK), jax.random.key(0), Probe(),
                              reads=Reads(activations=True),
                              noise=jax.tree.map(jnp.asarray, noise))
    return np.asarray(tokens), np.asarray(recs.phi)


@pytest.mark.parametrize("kw", [dict(temperature=0.7), dict(remasking="random"),
                                dict(temperature=1.0, remasking="random"), dict(cfg_scale=1.5),
                                dict(cfg_scale=1.5, cfg_pool="uncond"),
                                dict(cfg_scale=1.5, temperature=0.5, cfg_pool="uncond"),
                                dict(pooling="committed")])
def test_diffusion_options_match_plain_loop(diff_model, kw):
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8, **kw)
    noise = np_noise(8, 8, DIFF_CFG.vocab_size, seed=3)
    tokens, phi = port(diff_model, cfg, noise)
    ref_tokens, ref_phi = llada_loop(diff_model, IDS, MASK, steps=8, gen_length=16,
                                     block_length=8, noise=noise, **kw)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert_fp32_close(phi, ref_phi)


def test_cfg_pool_choice_changes_the_pooled_rows(diff_model):
    """"cond" and "uncond" read different passes (else the test above could not tell them
    apart), and without CFG the option changes nothing."""
    noise = np_noise(8, 8, DIFF_CFG.vocab_size, seed=3)
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8, cfg_scale=1.5)
    tok_c, phi_c = port(diff_model, cfg, noise)
    tok_u, phi_u = port(diff_model, cfg.replace(cfg_pool="uncond"), noise)
    np.testing.assert_array_equal(tok_c, tok_u)  # pooling never changes sampling
    assert np.abs(phi_c - phi_u).max() > 1e-2
    plain = SamplerConfig(steps=8, gen_length=16, block_length=8)
    np.testing.assert_array_equal(port(diff_model, plain, noise)[1],
                                  port(diff_model, plain.replace(cfg_pool="uncond"), noise)[1])


@pytest.fixture(scope="module")
def eos_model(diff_model):
    """The tiny LLaDA with EOS / EOT declared as the two tokens greedy decoding commits most
    often, so the EOS / EOT options have something to act on."""
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=8)
    tokens, _ = port(diff_model, cfg, np_noise(8, 8, DIFF_CFG.vocab_size, seed=0))
    vals, counts = np.unique(tokens, return_counts=True)
    eos, eot = (int(v) for v in vals[np.argsort(-counts, kind="stable")[:2]])
    return Model(DIFF_CFG.replace(eos_token_id=eos, eot_token_id=eot), diff_model.params)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("opt", ["logits_eos_inf", "confidence_eos_eot_inf"])
def test_llada_eos_options_match_upstream(eos_model, opt, temperature):
    """``logits_eos_inf`` / ``confidence_eos_eot_inf`` against upstream's code path
    (including, at T = 0, its write through the aliased noisy-logits tensor), with the same
    uniforms on both sides; and each option really changes the result here."""
    kw = dict(steps=8, gen_length=16, block_length=8, temperature=temperature)
    noise = np_noise(8, 8, DIFF_CFG.vocab_size, seed=5)
    tokens, phi = port(eos_model, SamplerConfig(**kw, **{opt: True}), noise)
    ref_tokens, ref_phi = llada_loop(eos_model, IDS, MASK, noise=noise, **kw, **{opt: True})
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert_fp32_close(phi, ref_phi)
    without, _ = port(eos_model, SamplerConfig(**kw), noise)
    assert (without != tokens).any(), f"{opt} changed nothing: the test lost its point"
    if opt == "logits_eos_inf":
        assert (without == eos_model.config.eos_token_id).any()
        assert not (tokens == eos_model.config.eos_token_id).any()


def test_llada_key_path_samples_the_right_distribution(diff_model):
    """The production path (uniforms drawn from the key inside the loop): one masked
    position, one step, temperature 0.7, 4096 rows of the same prompt. Each row's token must
    follow softmax(logits / 0.7) of the first forward pass (every count within 5 sigma of
    its expectation); softmax(logits), i.e. a sampler ignoring T, fails the same check."""
    n, temp = 4096, 0.7
    ids, mask = np.repeat(IDS[:1], n, 0), np.repeat(MASK[:1], n, 0)
    cfg = SamplerConfig(steps=1, gen_length=1, block_length=1, temperature=temp)
    res = generate(diff_model, input_ids=ids, attention_mask=mask, cfg=cfg, seed=11)
    canvas = np.concatenate([IDS[:1], [[DIFF_CFG.mask_token_id]]], 1)
    logits = np.asarray(diff_model.forward(canvas).logits, np.float64)[0, -1]
    counts = np.bincount(res.tokens[:, 0], minlength=DIFF_CFG.vocab_size)

    def within(p):
        return bool((np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1).all())

    assert within(np_softmax(logits / temp))
    assert not within(np_softmax(logits))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_diffusion_middle_layer_and_ar_on_diffusion(diff_model):
    cfg = SamplerConfig(steps=8, gen_length=8, mode="ar_on_diffusion", layer="first")
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                   readout=Readout(activations=True))
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
                   readout=Readout(activations=True))
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
                   readout=Readout(activations=True))
    first = int(np.argmax(res.tokens[0] == eos))
    assert first <= 3
    assert (res.tokens[0, first + 1:] == 0).all()
    tokens, phi = ar_loop(model, IDS[:1], MASK[:1], gen_length=8)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)


def test_ar_key_path_samples_the_right_distribution(ar_model):
    """AR sampling at T = 0.8 with top-k 20 and top-p 0.9 (HF's order: temperature, top-k,
    top-p): the first token of 4096 rows must follow the filtered, renormalised
    softmax of the last prompt position's logits (5 sigma per count; the filters computed by
    the oracle's upstream-style top_k_logits / top_p_logits); the unfiltered softmax fails."""
    n = 4096
    ids, mask = np.repeat(IDS[:1], n, 0), np.repeat(MASK[:1], n, 0)
    cfg = SamplerConfig.autoregressive(gen_length=1, temperature=0.8, top_k=20, top_p=0.9)
    res = generate(ar_model, input_ids=ids, attention_mask=mask, cfg=cfg, seed=13)
    logits = np.asarray(ar_model.forward(IDS[:1]).logits, np.float64)[0, -1] / 0.8
    counts = np.bincount(res.tokens[:, 0], minlength=AR_CFG.vocab_size)

    def within(p):
        return bool((np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1).all())

    want = np_softmax(top_p_logits(top_k_logits(logits, 20), 0.9))
    assert (want > 0).sum() < 20  # top-p cut below top-k: both filters act
    assert within(want)
    assert not within(np_softmax(logits))


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
    (dict(cfg_pool="both"), "cfg_pool"),
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
DREAM_ALGS = ["maskgit_plus", "topk_margin", "entropy", "origin"]


@pytest.fixture(scope="module")
def dream_model():
    return Model(DREAM_CFG, random_params(DREAM_CFG, seed=6, init_std=0.5))


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_matches_plain_loop(dream_model, alg):
    """Greedy Dream through ``generate`` (the production path) against upstream's loop."""
    cfg = SamplerConfig(steps=6, gen_length=12, block_length=12, dream_alg=alg)
    res = generate(dream_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, seed=2,
                   readout=Readout(activations=True))
    tokens, phi = dream_loop(dream_model, IDS, MASK, steps=6, gen_length=12, alg=alg)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert_fp32_close(res.activations, phi)
    assert (res.tokens != DREAM_CFG.mask_token_id).all()


@pytest.mark.parametrize("alg", DREAM_ALGS)
@pytest.mark.parametrize("kw", [dict(),
                                dict(top_p=0.6),
                                dict(temperature=0.8, top_p=0.9),
                                dict(temperature=0.8, top_k=5),
                                dict(temperature=1.0, top_p=0.8, top_k=8, dream_alg_temp=0.5)])
def test_dream_sampling_options_match_upstream(dream_model, alg, kw):
    """Every Dream algorithm with top-p, top-k (upstream's own filters, written out in the
    oracle), temperature and alg_temp, both sides fed the same uniforms."""
    cfg = SamplerConfig(steps=6, gen_length=12, block_length=12, dream_alg=alg, **kw)
    noise = np_noise(6, 12, DREAM_CFG.vocab_size, seed=4)
    tokens, phi = port(dream_model, cfg, noise, sampler=dream_sample)
    ref_tokens, ref_phi = dream_loop(
        dream_model, IDS, MASK, steps=6, gen_length=12, alg=alg, noise=noise,
        temperature=kw.get("temperature", 0.0), top_p=kw.get("top_p"), top_k=kw.get("top_k"),
        alg_temp=kw.get("dream_alg_temp", 0.0))
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert_fp32_close(phi, ref_phi)
    assert (tokens != DREAM_CFG.mask_token_id).all()


def test_filter_logits_matches_upstream_filters_on_any_rank():
    """[B, G, V] logits (Dream) as well as [B, V] (AR): the same entries survive as with
    Dream's top_p_logits / top_k_logits (top-p first, then top-k, as Dream applies them)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 5, 40))
    for top_p, top_k in ((0.7, None), (None, 6), (0.9, 4), (0.3, 30)):
        ours = np.asarray(filter_logits(filter_logits(jnp.asarray(logits, jnp.float32), None,
                                                      top_p), top_k, None))
        ref = logits
        if top_p is not None:
            ref = top_p_logits(ref, top_p)
        if top_k is not None:
            ref = top_k_logits(ref, top_k)
        kept = ref > np.finfo(np.float64).min
        assert 0 < kept.sum() < kept.size
        np.testing.assert_array_equal(ours > np.finfo(np.float32).min, kept)
        flat = np.asarray(filter_logits(jnp.asarray(logits[:, 0], jnp.float32), top_k, None))
        np.testing.assert_array_equal(flat > np.finfo(np.float32).min,
                                      top_k_logits(logits[:, 0], top_k) > -1e300
                                      if top_k else np.ones_like(flat, bool))


def test_dream_key_path_samples_the_right_distribution(dream_model):
    """Production path: one masked position, one step, T = 0.8, top-k 5, 4096 rows. Tokens
    must follow the top-5 renormalised softmax(logits / 0.8) of the shifted logits (5 sigma
    per count); the unfiltered softmax fails the same check."""
    n, temp, k = 4096, 0.8, 5
    ids, mask = np.repeat(IDS[:1], n, 0), np.repeat(MASK[:1], n, 0)
    cfg = SamplerConfig(steps=1, gen_length=1, block_length=1, temperature=temp, top_k=k)
    res = generate(dream_model, input_ids=ids, attention_mask=mask, cfg=cfg, seed=12)
    canvas = np.concatenate([IDS[:1], [[DREAM_CFG.mask_token_id]]], 1)
    logits = np.asarray(dream_model.forward(canvas).logits, np.float64)[0, -2] / temp
    counts = np.bincount(res.tokens[:, 0], minlength=DREAM_CFG.vocab_size)

    def within(p):
        return bool((np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1).all())

    assert within(np_softmax(top_k_logits(logits, k)))
    assert not within(np_softmax(logits))


def test_torch_multinomial_is_the_exponential_race():
    """The oracles' premise: torch's ``Categorical.sample`` / ``multinomial(p, 1)`` is
    ``argmax(p / E)`` and ``multinomial(p, n, replacement=False)`` is ``topk(p / E, n)``,
    E ~ Exp(1) drawn from the same generator state (what dream_loop does with E = -log u)."""
    import torch

    p = torch.softmax(torch.randn(6, 50, generator=torch.Generator().manual_seed(0)), -1)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        one, many = torch.multinomial(p, 1, generator=g)[:, 0], None
        e = torch.empty_like(p).exponential_(1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(one, (p / e).argmax(-1))
        g = torch.Generator().manual_seed(seed)
        many = torch.multinomial(p, 4, replacement=False, generator=g)
        e = torch.empty_like(p).exponential_(1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(many, torch.topk(p / e, 4).indices)
        # ... and dream_sample_tokens' draw with E = -log u is that race
        u = np.exp(-e.double().numpy())
        _, x0 = dream_sample_tokens(np.log(p.double().numpy()), temperature=1.0, u=u)
        np.testing.assert_array_equal(x0, one.numpy())


def test_bucket_lengths_and_memory_aware_batch_plan():
    from sri_jax.sampling.batching import bucket_length, plan_batches

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
