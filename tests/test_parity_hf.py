"""Numerical parity of checkpoints loaded by ``load_hf_dir`` against HF transformers (PyTorch).

Oracles (see ``checkpoint_writers``): HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` in fp32
(eager attention); for LLaDA the HF Llama with LLaDA's weights renamed and
``config.is_causal = False``; for Dream HF Qwen2 with ``is_causal = False`` (transformers 5.x:
setting ``config.is_causal`` makes every layer bidirectional; a 2-D attention mask then masks
padded keys only -- checked below by perturbing a late token and watching position 0 change).

fp32: logits and the last hidden state (post final norm; HF ``hidden_states[-1]``) agree
within tests/tolerance.py's fp32 bound (2e-5 of the largest |value|, i.e. ~1e-4 on logits of
magnitude ~5), on a left-padded batch (only real positions compared). Causal
models get HF the explicit ``position_ids = clamp(cumsum(mask) - 1, 0)`` (our default);
bidirectional models give HF its default 0..L-1 (ours count real tokens only; RoPE is
relative, so a constant shift of every real position leaves real outputs unchanged).

bf16 tolerance (measured, 18 runs = 6 configs x 3 seeds, logits |max| ~5): loading the same
checkpoint with ``dtype="bfloat16"`` gives max abs logit error 0.084-0.167 vs the fp32 oracle
(mean abs 0.012-0.020); HF's own bf16 model is 0.096-0.199 off the same oracle. Asserted:
max abs <= 0.35, mean abs <= 0.04, and max abs <= 2x HF-bf16's own max abs error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import checkpoint_writers as cw
from sri_jax.models.model import Model
from sri_jax.weights import load_hf_dir
from tolerance import FP32_REL
LLAMA3_RS = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
# Gemma-3: global layers theta 1e6 with linear scaling (as the 4B+ models), local 1e4.
GEMMA3_ROPE = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}

CASES = {
    "llama_gqa_untied": (cw.write_llama_dir, dict(layers=3, heads=4, kv_heads=2)),
    "llama_gqa_tied": (cw.write_llama_dir, dict(heads=4, kv_heads=2, tie=True, seed=1)),
    "llama3_rope_tied": (cw.write_llama_dir, dict(rope_scaling=LLAMA3_RS, tie=True, seed=3,
                                                  heads=4, kv_heads=1)),
    "qwen2_bias_untied": (cw.write_qwen2_dir, dict(seed=4)),
    "qwen2_bias_tied": (cw.write_qwen2_dir, dict(tie=True, seed=5)),
    "llada": (cw.write_llada_dir, dict(seed=6)),
    "dream": (cw.write_dream_dir, dict(seed=7)),
    # sliding window 4 < the 16-token rows (the padded rows hold 13 and 7 real tokens);
    # soft-caps small enough to bind (|logits| reach ~3.7 under the final cap 4)
    "gemma2": (cw.write_gemma_dir, dict(arch="gemma2", attn_logit_softcapping=3.0,
                                        final_logit_softcapping=4.0, seed=8)),
    # 7 layers: 5 sliding, 1 global, 1 sliding (the 5:1 pattern)
    "gemma3": (cw.write_gemma_dir, dict(arch="gemma3", layers=7, rope_parameters=GEMMA3_ROPE,
                                        seed=9)),
}
L = 16


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """name -> (WrittenCheckpoint, fp32 Model, oracle), built lazily once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            writer, kw = CASES[name]
            ck = writer(tmp_path_factory.mktemp(name), **kw)
            res = load_hf_dir(ck.path, dtype="float32")
            model = Model(config=res.config, params=res.params)
            cache[name] = (ck, model, ck.oracle())
        return cache[name]

    return get


def _batch(vocab, seed=0):
    """Three rows of length L, left padding 0 / 3 / 9 (pad id 0 under the mask)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, min(vocab, 250), size=(3, L))
    mask = np.ones((3, L), np.int64)
    for row, pad in enumerate((0, 3, 9)):
        mask[row, :pad] = 0
        ids[row, :pad] = 0
    return ids, mask


def _rel_err(ours, ref, real):
    """(max |ours - ref| / max |ref|, max |ref|) over the real (unpadded) positions."""
    scale = float(np.abs(ref[real]).max())
    return float(np.abs(ours - ref)[real].max()) / scale, scale


def _hf(oracle, ids, mask, causal):
    kw = {"attention_mask": torch.tensor(mask)}
    if causal:
        kw["position_ids"] = torch.tensor(np.maximum(np.cumsum(mask, -1) - 1, 0))
    with torch.no_grad():
        return oracle(torch.tensor(ids), output_hidden_states=True, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_logits_hidden_and_layer_match_hf(loaded, name):
    """One compiled forward per case checks logits, the post-norm hidden state and the
    residual stream after block ``num_layers - 2`` (HF ``hidden_states[num_layers - 1]``)."""
    ck, model, oracle = loaded(name)
    cfg = model.config
    assert cfg.causal == ck.causal
    ids, mask = _batch(cfg.vocab_size)
    k = cfg.num_layers - 2
    ours = model.forward(ids, mask, layer=k)
    ref = _hf(oracle, ids, mask, cfg.causal)
    logits, hidden = np.asarray(ours.logits), np.asarray(ours.hidden)
    layer_hidden = np.asarray(ours.layer_hidden)
    assert logits.shape == tuple(ref.logits.shape)
    for a in (logits, hidden, layer_hidden):  # padded queries must not give NaN either
        assert np.isfinite(a).all()
    real = mask.astype(bool)
    for what, a, r in (("logits", logits, ref.logits), ("hidden", hidden, ref.hidden_states[-1]),
                       (f"layer {k} hidden", layer_hidden, ref.hidden_states[k + 1])):
        err, scale = _rel_err(a, r.numpy(), real)
        assert err < FP32_REL, f"{name}: {what} max abs err {err * scale} (scale {scale})"
    # the test is not vacuous: logits are O(1)
    assert np.abs(ref.logits.numpy()).max() > 1.0


@pytest.mark.parametrize("layer,hf_index", [(0, 1), ("first", 1), ("last", 3), (-1, 3)])
def test_every_layer_matches_hf(loaded, layer, hf_index):
    """``layer=k`` gives HF ``hidden_states[k + 1]``; for the last block that is HF's
    post-norm entry, so "last" equals ``.hidden``. (k = 1 is covered above.)"""
    ck, model, oracle = loaded("llama_gqa_untied")
    assert model.config.num_layers == 3
    ids, mask = _batch(model.config.vocab_size)
    ref = _hf(oracle, ids, mask, True)
    out = model.forward(ids, mask, layer=layer)
    real = mask.astype(bool)
    err, scale = _rel_err(np.asarray(out.layer_hidden), ref.hidden_states[hf_index].numpy(), real)
    assert err < FP32_REL, f"layer {layer} max abs err {err * scale} (scale {scale})"
    if hf_index == 3:
        np.testing.assert_array_equal(np.asarray(out.layer_hidden), np.asarray(out.hidden))


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_oracle_and_model_are_bidirectional(loaded, name):
    ck, model, oracle = loaded(name)
    ids, mask = _batch(model.config.vocab_size, seed=2)
    ids2 = ids.copy()
    ids2[:, -1] = (ids2[:, -1] + 1) % 200 + 3
    ref1, ref2 = _hf(oracle, ids, mask, False), _hf(oracle, ids2, mask, False)
    d_ref = (ref1.logits[:, 0] - ref2.logits[:, 0]).abs().max().item()
    assert d_ref > 1e-3, "the HF oracle is not bidirectional"
    k = model.config.num_layers - 2  # same static args as the parity test: no recompile
    o1, o2 = model.forward(ids, mask, layer=k), model.forward(ids2, mask, layer=k)
    d_ours = np.abs(np.asarray(o1.logits)[:, 0] - np.asarray(o2.logits)[:, 0]).max()
    assert d_ours > 1e-3
    # ... and padded keys are masked: changing a padded token changes no real position
    ids3 = ids.copy()
    ids3[2, 0] = 7
    o3 = model.forward(ids3, mask, layer=k)
    real = mask.astype(bool)  # bit-identical up to fp32 reordering: same bound as vs HF
    assert _rel_err(np.asarray(o3.logits), np.asarray(o1.logits), real)[0] < FP32_REL


def test_llama3_rope_scaling_is_active(loaded):
    """With original context 32 and head_dim 16 the scaling changes low frequencies: an HF
    oracle with the same weights but no scaling gives clearly different logits, so the parity
    test of the scaled model (2e-5 of the scale) really checks the scaled frequencies."""
    ck, model, oracle = loaded("llama3_rope_tied")
    rs = model.config.rope_scaling
    assert rs is not None and rs.rope_type == "llama3"
    assert (rs.factor, rs.original_max_position_embeddings) == (4.0, 32)
    plain = cw.WrittenCheckpoint(ck.path, ck.hf_config, ck.state_dict, "llama",
                                 {k: v for k, v in ck.oracle_config.items()
                                  if k != "rope_scaling"}).oracle()
    ids, mask = _batch(model.config.vocab_size, seed=3)
    diff = (_hf(oracle, ids, mask, True).logits - _hf(plain, ids, mask, True).logits)
    assert diff.abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["llama3_rope_tied", "qwen2_bias_untied", "llada", "gemma2",
                                  "gemma3"])
def test_bf16_logits_within_documented_tolerance(loaded, name):
    ck, model32, oracle = loaded(name)
    res = load_hf_dir(ck.path, dtype="bfloat16")
    assert all(np.asarray(a).dtype == np.dtype("bfloat16")
               for a in __import__("jax").tree_util.tree_leaves(res.params))
    model = Model(config=res.config, params=res.params)
    ids, mask = _batch(model.config.vocab_size)
    ref = _hf(oracle, ids, mask, model.config.causal).logits.numpy()
    real = mask.astype(bool)
    err = np.abs(np.asarray(model.forward(ids, mask).logits) - ref)[real]
    hf_bf16 = _hf(ck.oracle().to(torch.bfloat16), ids, mask,
                  model.config.causal).logits.float().numpy()
    hf_err = np.abs(hf_bf16 - ref)[real].max()
    assert err.max() <= 0.35, f"{name}: bf16 max abs err {err.max()}"
    assert err.mean() <= 0.04, f"{name}: bf16 mean abs err {err.mean()}"
    assert err.max() <= 2 * hf_err, f"{name}: bf16 err {err.max()} vs HF bf16 {hf_err}"


@pytest.mark.parametrize("name,changes", [
    ("gemma2", dict(layer_types=None)),
    ("gemma2", dict(attn_logit_softcap=None)),
    ("gemma2", dict(final_logit_softcap=None)),
    ("gemma3", dict(layer_types=None)),
    ("gemma3", dict(rope_scaling=None)),
    ("gemma3", dict(rope_local_theta=None)),
    ("gemma3", dict(qk_norm=False)),
])
def test_gemma_features_are_active(loaded, name, changes):
    """Each Gemma feature changes the logits by far more than the parity tolerance, so the
    1e-4 parity above really checks the window, the soft-caps, both RoPE bases and QK-norm."""
    ck, model, oracle = loaded(name)
    ids, mask = _batch(model.config.vocab_size)
    ref = _hf(oracle, ids, mask, True).logits.numpy()
    off = Model(config=model.config.replace(**changes), params=model.params)
    real = mask.astype(bool)
    assert np.abs(np.asarray(off.forward(ids, mask).logits) - ref)[real].max() > 1e-2


def test_gemma_config_fields(loaded):
    """config.json -> the Gemma fields (transformers 5 keys, as written)."""
    _, g2, _ = loaded("gemma2")
    c = g2.config
    assert (c.family, c.norm_unit_offset, c.sandwich_norms, c.qk_norm, c.scale_embeddings,
            c.mlp_activation) == ("gemma2", True, True, False, True, "gelu_tanh")
    assert (c.query_pre_attn_scalar, c.attn_logit_softcap, c.final_logit_softcap,
            c.sliding_window, c.tie_word_embeddings) == (24.0, 3.0, 4.0, 4, True)
    assert c.sliding_layers == (True, False, True, False)
    _, g3, _ = loaded("gemma3")
    c = g3.config
    assert (c.family, c.qk_norm, c.attn_logit_softcap, c.final_logit_softcap) == \
        ("gemma3", True, None, None)
    assert c.sliding_layers == (True,) * 5 + (False, True)
    assert (c.rope_theta, c.rope_local_theta) == (1e6, 1e4)
    assert (c.rope_scaling.rope_type, c.rope_scaling.factor) == ("linear", 4.0)
