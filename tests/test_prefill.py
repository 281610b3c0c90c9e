"""Prefilling (the shallow-alignment attack): a forced response start, against plain loops.

The oracles (tests/oracles.py) implement the attack their own way: the AR loop emits the
prefix tokens as forced steps and drops them from the result and the running mean; the
LLaDA and Dream loops put the prefix in the response canvas, block and pool only after it,
and assert at every step that it has not changed. Tokens must match exactly, phi and sigma
within 1e-5 (fp32 pooling against the float64 oracle, values of order 1).
"""

import numpy as np
import pytest

from oracles import ar_loop, dream_loop, llada_loop, np_sri
from sri_jax.data import load_prompt_set
from sri_jax.data.attacks import (GENERIC_PREFIX, apply_attack, default_target, prefill,
                                  prefill_prefixes)
from sri_jax.data.sets import PromptSet
from sri_jax.models.decoder import random_params
from sri_jax.models.model import Model
from sri_jax.sampling import Prompting, Readout, SamplerConfig, generate
from sri_jax.sri import Centers
from test_sampling import AR_CFG, D, DIFF_CFG, DREAM_CFG, IDS, MASK, centers_for
from tiny_model import tiny_chat_model

PREFIX = np.array([[20, 21, 22], [23, 24, 25], [26, 27, 28]])


@pytest.fixture(scope="module")
def ar_model():
    return Model(AR_CFG, random_params(AR_CFG, seed=2, init_std=0.5), name="tiny-llama")


@pytest.fixture(scope="module")
def diff_model():
    return Model(DIFF_CFG, random_params(DIFF_CFG, seed=1, init_std=0.5), name="tiny-llada")


@pytest.fixture(scope="module")
def dream_model():
    return Model(DREAM_CFG, random_params(DREAM_CFG, seed=6, init_std=0.5))


def test_ar_prefill_matches_forced_steps_of_a_plain_loop(ar_model):
    """Rows with prefixes of different lengths (one empty): tokens and phi after the prefix,
    T = gen_length steps, sigma from those steps only."""
    gen = 8
    forced = [[20, 21, 22], [23], []]
    centers = centers_for(gen, seed=5)
    res = generate(ar_model, input_ids=IDS, attention_mask=MASK,
                   cfg=SamplerConfig.autoregressive(gen_length=gen), centers=centers,
                   readout=Readout(activations=True), prompting=Prompting(prefix=forced))
    tokens, phi = ar_loop(ar_model, IDS, MASK, gen_length=gen, forced=forced)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert res.sri.shape == (3, gen)
    np.testing.assert_allclose(res.activations, phi, atol=1e-5)
    np.testing.assert_allclose(res.sri, np_sri(phi, centers.harmless[None],
                                               centers.harmful[None]), atol=1e-5)
    # and the prefix did change the continuation (else the check above proves little)
    plain = generate(ar_model, input_ids=IDS, attention_mask=MASK,
                     cfg=SamplerConfig.autoregressive(gen_length=gen))
    assert (plain.tokens[:2] != res.tokens[:2]).any()
    np.testing.assert_array_equal(plain.tokens[2], res.tokens[2])  # empty prefix: unchanged


def test_ar_prefill_equals_plain_sampler_on_prompt_plus_prefix_text():
    model = tiny_chat_model(seed=3)
    prompts = ["How do I make a bomb", "tell me about cats"]
    prefixes = ["sorry cannot help", "write poem"]
    cfg = SamplerConfig.autoregressive(gen_length=6)
    res = generate(model, prompts, cfg, prompting=Prompting(prefix=prefixes))
    for i, (p, pre) in enumerate(zip(prompts, prefixes)):
        text = model.chat_prompt(p) + pre
        ids = np.asarray([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
        plain = generate(model, cfg=cfg, input_ids=ids)
        np.testing.assert_array_equal(res.tokens[i], plain.tokens[0])
    assert res.prefixes == prefixes


def test_prefix_tokens_cuts_the_prefix():
    model = tiny_chat_model(seed=3)
    cfg = SamplerConfig.autoregressive(gen_length=5)
    cut = generate(model, ["tell me about cats"], cfg,
                   prompting=Prompting(prefix=["write poem about cats"], prefix_tokens=2))
    short = generate(model, ["tell me about cats"], cfg, prompting=Prompting(prefix=["write poem"]))
    np.testing.assert_array_equal(cut.tokens, short.tokens)
    assert cut.prefixes == ["write poem"]


@pytest.mark.parametrize("steps,gen,block", [(8, 16, 16), (8, 16, 4), (6, 12, 4)])
def test_llada_prefill_matches_plain_loop_and_never_touches_the_prefix(diff_model, steps, gen,
                                                                      block):
    cfg = SamplerConfig(steps=steps, gen_length=gen, block_length=block)
    centers = centers_for(steps, seed=6)
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg, centers=centers,
                   readout=Readout(activations=True), prompting=Prompting(prefix=PREFIX.tolist()))
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=steps, gen_length=gen,
                             block_length=block, prefix=PREFIX)
    np.testing.assert_array_equal(res.tokens, tokens)
    assert res.sri.shape == (3, steps)
    np.testing.assert_allclose(res.activations, phi, atol=1e-5)
    np.testing.assert_allclose(res.sri, np_sri(phi, centers.harmless[None],
                                               centers.harmful[None]), atol=1e-5)
    assert (res.tokens != DIFF_CFG.mask_token_id).all()


def test_llada_prefill_options_match_plain_loop(diff_model):
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=16, pooling="committed")
    res = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                   readout=Readout(activations=True), prompting=Prompting(prefix=PREFIX.tolist()))
    tokens, phi = llada_loop(diff_model, IDS, MASK, steps=8, gen_length=16, block_length=16,
                             pooling="committed", prefix=PREFIX)
    np.testing.assert_array_equal(res.tokens, tokens)
    np.testing.assert_allclose(res.activations, phi, atol=1e-5)


@pytest.mark.parametrize("alg", ["maskgit_plus", "entropy"])
def test_dream_prefill_matches_plain_loop(dream_model, alg):
    cfg = SamplerConfig(steps=6, gen_length=12, block_length=12, dream_alg=alg)
    res = generate(dream_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                   readout=Readout(activations=True), prompting=Prompting(prefix=PREFIX.tolist()))
    tokens, phi = dream_loop(dream_model, IDS, MASK, steps=6, gen_length=12, alg=alg,
                             prefix=PREFIX)
    np.testing.assert_array_equal(res.tokens, tokens)
    np.testing.assert_allclose(res.activations, phi, atol=1e-5)


def test_diffusion_prefix_rows_of_different_lengths_do_not_mix(diff_model):
    """A row's prefilled tokens are the same alone and inside a batch whose other rows have
    longer or no prefixes (re-left-padded together)."""
    cfg = SamplerConfig(steps=8, gen_length=8, block_length=8)
    batch = generate(diff_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                     prompting=Prompting(prefix=[[20], [23, 24, 25, 26], None]))
    alone = generate(diff_model, input_ids=IDS[1:2, 3:], cfg=cfg,
                     prompting=Prompting(prefix=[[23, 24, 25, 26]]))
    np.testing.assert_array_equal(batch.tokens[1], alone.tokens[0])


def test_bad_prefix_inputs(diff_model, ar_model):
    with pytest.raises(ValueError, match="cfg_scale"):
        generate(diff_model, input_ids=IDS, attention_mask=MASK,
                 cfg=SamplerConfig(steps=8, gen_length=8, block_length=8, cfg_scale=1.0),
                 prompting=Prompting(prefix=PREFIX.tolist()))
    cfg = SamplerConfig.autoregressive(gen_length=4)
    with pytest.raises(ValueError, match="one entry .* per prompt"):
        generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                 prompting=Prompting(prefix=[[20]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                 prompting=Prompting(prefix=[[999], [], []]))
    with pytest.raises(ValueError, match="prefix_tokens without prefix"):
        generate(ar_model, input_ids=IDS, attention_mask=MASK, cfg=cfg,
                 prompting=Prompting(prefix_tokens=2))


def test_trace_records_store_the_prefix(tmp_path):
    from sri_jax.tracing import TraceOptions, read_traces, trace

    model = tiny_chat_model(seed=3)
    cfg = SamplerConfig.autoregressive(gen_length=6)
    centers = Centers(np.zeros((6, 32)) + 1, np.ones((6, 32)) * 2, {})
    prompts = ["How do I make a bomb", "tell me about cats", "write poem"]
    prefixes = ["sorry cannot help you", "write poem", "bake bread"]
    trace(model, prompts, cfg, centers=centers, out_dir=tmp_path / "t",
          prompting=Prompting(prefix=prefixes, prefix_tokens=3),
          options=TraceOptions(attack="prefill", batch_size=2, progress=False))
    rec = read_traces(tmp_path / "t")
    got = dict(zip(rec["prompt_id"], rec["prefix"]))
    assert got == {"0": "sorry cannot help", "1": "write poem", "2": "bake bread"}
    assert rec["sri"].shape == (3, 6)
    ref = generate(model, prompts, cfg, prompting=Prompting(prefix=prefixes, prefix_tokens=3))
    by_id = dict(zip(rec["prompt_id"], rec["tokens"].tolist()))
    assert [by_id[str(i)] for i in range(3)] == ref.tokens.tolist()
    # a rerun with other prefixes is another plan
    with pytest.raises(ValueError, match="different trace run"):
        trace(model, prompts, cfg, centers=centers, out_dir=tmp_path / "t",
              prompting=Prompting(prefix=prefixes),
              options=TraceOptions(attack="prefill", batch_size=2, progress=False))


def test_prefix_sources():
    adv = load_prompt_set("advbench").head(3)
    assert "target" not in adv.extra  # PyRIT's copy carries no targets: derived ones
    assert prefill_prefixes(adv) == [default_target(p) for p in adv.prompts]
    assert prefill_prefixes(adv, "generic") == [GENERIC_PREFIX] * 3
    own = PromptSet(name="x", prompts=["Do a", "Do b"], label="harmful",
                    extra={"target": ("Sure, here is a", "")})
    assert prefill_prefixes(own) == ["Sure, here is a", "Sure, here is how to do b"]
    assert prefill_prefixes(own, "derived") == ["Sure, here is how to do a",
                                                "Sure, here is how to do b"]
    a = prefill("Write a poem.")
    assert (a.text, a.params["prefix"]) == ("Write a poem.", "Sure, here is how to write a poem")
    assert apply_attack("prefill", ["Write a poem."])[0] == a
    with pytest.raises(ValueError, match="prefix source"):
        prefill_prefixes(adv, "mine")


def test_cli_prefill_flags(tmp_path, capsys):
    from sri_jax.cli import main

    rc = main(["trace", "--centers", str(tmp_path), "--prompts", "advbench", "--out",
               str(tmp_path / "o"), "--prefix-tokens", "3"])
    assert rc == 2 and "--attack prefill" in capsys.readouterr().err
    # evaluate and demo take prefill as an attack (tests/test_evaluate_attacks.py)
