"""AR sampling against HF transformers ``generate`` (greedy, PyTorch fp32) on tiny Llama,
Qwen2, Gemma-2 and Gemma-3 checkpoints loaded from disk: tokens must be identical for every
row of a left-padded batch, including rows that stop at EOS (HF pads them with pad_token_id,
as we do). The Gemma checkpoints have a sliding window of 4 tokens, far shorter than prompt +
generation (up to 22 tokens), so the window mask over our KV cache is checked in prefill and
in decode against HF's sliding-window cache; without the window the tokens differ."""

import numpy as np
import pytest
import torch

import checkpoint_writers as cw
from sri_jax.models.model import Model
from sri_jax.sampling import SamplerConfig, generate
from sri_jax.weights import load_hf_dir

GEN = 12


@pytest.mark.parametrize("writer,kw", [
    (cw.write_llama_dir, dict(layers=2, heads=4, kv_heads=2, seed=11)),
    (cw.write_llama_dir, dict(layers=2, heads=4, kv_heads=1, tie=True, seed=12,
                              rope_scaling={"rope_type": "llama3", "factor": 4.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 32})),
    (cw.write_qwen2_dir, dict(seed=13)),
    # untied heads: tied tiny Gemmas mostly repeat their input token (scaled embedding)
    (cw.write_gemma_dir, dict(arch="gemma2", attn_logit_softcapping=3.0,
                              final_logit_softcapping=4.0, tie=False, seed=3)),
    (cw.write_gemma_dir, dict(arch="gemma3", layers=7, tie=False, seed=4)),
])
def test_greedy_tokens_equal_hf_generate(tmp_path, writer, kw):
    ck = writer(tmp_path, **kw)
    res = load_hf_dir(ck.path, dtype="float32")
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 250, size=(3, 10))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :7] = 0
    ids[mask == 0] = 0
    oracle = ck.oracle()
    # make EOS a token that greedy decoding of row 0 emits mid-way, so EOS handling is tested
    with torch.no_grad():
        probe = oracle.generate(torch.tensor(ids[:1]), attention_mask=torch.tensor(mask[:1]),
                                max_new_tokens=GEN, do_sample=False, pad_token_id=0)
    eos = int(probe[0, 10 + 5])
    cfg_model = res.config.replace(eos_token_id=eos, pad_token_id=0)
    model = Model(config=cfg_model, params=res.params)
    ours = generate(model, input_ids=ids, attention_mask=mask,
                    cfg=SamplerConfig.autoregressive(gen_length=GEN)).tokens
    with torch.no_grad():
        ref = oracle.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                              max_new_tokens=GEN, do_sample=False, eos_token_id=eos,
                              pad_token_id=0, min_new_tokens=0)[:, ids.shape[1]:].numpy()
    ref = np.pad(ref, ((0, 0), (0, GEN - ref.shape[1])), constant_values=0)
    np.testing.assert_array_equal(ours, ref)
    assert (ours == eos).any()
    if res.config.sliding_window is not None:
        full = Model(config=cfg_model.replace(layer_types=None), params=res.params)
        assert (generate(full, input_ids=ids, attention_mask=mask,
                         cfg=SamplerConfig.autoregressive(gen_length=GEN)).tokens != ref).any()
