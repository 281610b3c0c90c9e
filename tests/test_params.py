"""Each decoder parameter is declared once (sri_jax.models.params): the shapes, the
tensor-parallel specs (logical axes -> mesh axes by rules), the LoRA targets and the random
init derive from it. Expected values here are written out by hand from the architecture."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sri_jax.models.config import ModelConfig
from sri_jax.models.lora import ATTENTION_TARGETS, MLP_TARGETS
from sri_jax.models.params import PARAMS, random_params, param_shapes
from sri_jax.parallel.mesh import kv_cache_spec, param_specs, sharding_fallbacks
from sri_jax.weights.name_maps import (GGUF_GEMMA3_MAP, GGUF_LLAMA_MAP, GGUF_MAP, NAME_MAPS,
                                       TRANSFORMS, permute_qk)

# every optional parameter switched on: V=64, D=16, F=24, H=4, K=2, hd=6, N=3
FULL = ModelConfig(family="gemma3", vocab_size=64, hidden_size=16, intermediate_size=24,
                   num_layers=3, num_heads=4, num_kv_heads=2, head_dim=6, attention_bias=True,
                   sandwich_norms=True, qk_norm=True, norm_unit_offset=True)


def test_shapes_from_the_declarations():
    s = param_shapes(FULL)
    assert s["embed"] == (64, 16) and s["lm_head"] == (16, 64) and s["final_norm"] == (16,)
    assert s["layers"] == {
        "attn_norm": (3, 16), "wq": (3, 16, 24), "wk": (3, 16, 12), "wv": (3, 16, 12),
        "wo": (3, 24, 16), "mlp_norm": (3, 16), "w_gate": (3, 16, 24), "w_up": (3, 16, 24),
        "w_down": (3, 24, 16), "bq": (3, 24), "bk": (3, 12), "bv": (3, 12),
        "post_attn_norm": (3, 16), "post_mlp_norm": (3, 16), "q_norm": (3, 6), "k_norm": (3, 6)}
    plain = param_shapes(FULL.replace(attention_bias=False, sandwich_norms=False, qk_norm=False,
                                      tie_word_embeddings=True))
    assert "lm_head" not in plain and set(plain["layers"]) == {
        "attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down"}


def test_specs_from_logical_axes():
    m = "model"
    s = param_specs(FULL, 2)  # H, K, F, V all divide 2
    assert s["embed"] == P(m, None) and s["lm_head"] == P(None, m)
    assert s["final_norm"] == P(None)
    lay = s["layers"]
    assert lay["wq"] == lay["wk"] == lay["wv"] == lay["w_gate"] == lay["w_up"] == P(None, None, m)
    assert lay["wo"] == lay["w_down"] == P(None, m, None)
    assert lay["bq"] == lay["bk"] == lay["bv"] == P(None, m)
    for k in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm", "q_norm", "k_norm"):
        assert lay[k] == P(None, None)
    assert sharding_fallbacks(FULL, 2) == []
    # model=4: K=2 does not divide, so wk/wv/bk/bv and the cache are replicated; the vocab
    # (64) still splits; with vocab 65 the tables split their hidden axis (16) instead.
    s4 = param_specs(FULL, 4)
    assert s4["layers"]["wk"] == P(None, None, None) and s4["layers"]["bk"] == P(None, None)
    assert s4["layers"]["wq"] == P(None, None, m) and kv_cache_spec(FULL, 4) == P(
        None, "data", None, None, None)
    assert sharding_fallbacks(FULL, 4) == [
        "num_kv_heads 2 % model 4 != 0: wk, wv, bk, bv, the KV cache replicated"]
    odd = FULL.replace(vocab_size=65)
    assert param_specs(odd, 4)["embed"] == P(None, m) and param_specs(odd, 4)["lm_head"] == P(m, None)
    assert param_specs(odd.replace(hidden_size=18), 4)["embed"] == P(None, None)
    assert all(v == P(*[None] * len(v)) for v in param_specs(FULL, 1)["layers"].values())


def test_lora_targets_are_the_declared_projections():
    assert ATTENTION_TARGETS == ("wq", "wk", "wv", "wo")
    assert MLP_TARGETS == ("w_gate", "w_up", "w_down")


def test_random_params_identity_norms_and_seeds():
    p = random_params(FULL, seed=1)
    assert np.all(np.asarray(p["layers"]["q_norm"]) == 0)  # (1 + w) norm: identity is w = 0
    assert np.all(np.asarray(random_params(FULL.replace(norm_unit_offset=False))["final_norm"]) == 1)
    w = np.asarray(p["layers"]["wq"])
    assert abs(w.std() - 0.02) < 0.004 and not np.array_equal(w, np.asarray(p["layers"]["wk"]))
    np.testing.assert_array_equal(w, np.asarray(random_params(FULL, seed=1)["layers"]["wq"]))
    assert not np.array_equal(w, np.asarray(random_params(FULL, seed=2)["layers"]["wq"]))
    # the documented key rule: the i-th non-norm parameter (embed 0, wq 1, wk 2) uses
    # fold_in(key(seed), i), so seeds give the same weights as the former NNX init
    k = jax.random.fold_in(jax.random.key(1), 2)
    np.testing.assert_array_equal(np.asarray(p["layers"]["wk"]), np.asarray(
        0.02 * jax.random.normal(k, (3, 16, 12))))


@pytest.mark.parametrize("name_map", sorted({*NAME_MAPS.values(), GGUF_MAP, GGUF_LLAMA_MAP,
                                               GGUF_GEMMA3_MAP}, key=lambda m: m.name),
                         ids=lambda m: m.name)
def test_every_name_map_covers_exactly_the_declared_params(name_map):
    required = {p.path for p in PARAMS if p.when in (None, "!tie_word_embeddings")}
    assert required <= {r.target for r in name_map.rules} <= {p.path for p in PARAMS}


def test_gguf_transforms():
    cfg = ModelConfig(family="llama", vocab_size=8, hidden_size=4, intermediate_size=4,
                      num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4)
    w = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)  # PyTorch [out = H*hd, in]
    np.testing.assert_array_equal(TRANSFORMS["unpermute_q_transpose"].apply(permute_qk(w, 2), cfg),
                                  w.T)
    k = w[:4]
    np.testing.assert_array_equal(TRANSFORMS["unpermute_k"].apply(permute_qk(k, 1), cfg), k)
    assert TRANSFORMS["unpermute_q_transpose"].stored_shape((4, 8)) == (8, 4)
    np.testing.assert_array_equal(TRANSFORMS["minus_one"].apply(np.ones(3, np.float16), cfg),
                                  np.zeros(3, np.float32))
    assert GGUF_LLAMA_MAP.rule_for(("layers", "wk")).transform == "unpermute_k_transpose"
    assert GGUF_GEMMA3_MAP.rule_for(("final_norm",)).transform == "minus_one"
    assert GGUF_MAP.rule_for(("layers", "wq")).transform == "transpose"


def test_config_lists_every_problem_at_once():
    """Messages written out by hand: bad values first (a size out of range stops there, the
    structure cannot be checked), then how the sizes fit together."""
    base = dict(family="llama", vocab_size=8, hidden_size=8, intermediate_size=8,
                num_layers=2, num_heads=2, num_kv_heads=2, head_dim=4)
    with pytest.raises(ValueError) as e:
        ModelConfig(**{**base, "family": "x", "vocab_size": 0, "rope_theta": True,
                       "eos_token_id": -1, "head_dim": 3})
    assert str(e.value) == (
        "invalid ModelConfig: family 'x' is not one of ('llama', 'qwen2', 'llada', 'dream', "
        "'gemma2', 'gemma3'); vocab_size must be an integer in 1..4194304, got 0; rope_theta "
        "must be a finite positive number, got True; eos_token_id must be a token id >= 0 or "
        "None, got -1")
    with pytest.raises(ValueError) as e:
        ModelConfig(**{**base, "num_heads": 3, "head_dim": 3, "attn_logit_softcap": 0.0,
                       "mlp_activation": "relu", "layer_types": ["sliding_attention"] * 2,
                       "causal": False})
    assert str(e.value) == (
        "invalid ModelConfig: num_heads 3 is not a multiple of num_kv_heads 2; head_dim 3 "
        "must be even for RoPE; attn_logit_softcap must be a finite positive number or None, "
        "got 0.0; mlp_activation 'relu' is not one of ('silu', 'gelu_tanh'); layer_types has "
        "sliding_attention layers but sliding_window is None; sliding-window layers need a "
        "causal model; a diffusion (non-causal) model needs mask_token_id")
