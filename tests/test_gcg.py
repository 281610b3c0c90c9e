"""GCG on tiny models: the objective against a numpy CE over ``Model.forward`` logits, the
one-hot gradient against central finite differences, search behaviour, token filtering,
determinism and resume.

Tolerances: losses are fp32 means of a few log-probabilities of order 1-10, compared to a
float64 numpy CE of the same fp32 logits: rtol 1e-5 + atol 1e-5. Finite differences use
eps = 1e-3 on the relaxed one-hot (fp32 rounding of a loss of order 10 over 2 eps gives up
to ~1e-3 absolute error; the O(eps^2) curvature term measured ~0.2 at eps = 1e-2 for these
large random weights, so ~2e-3 here): atol 5e-3 + rtol 2e-2 against gradient entries of
order 0.1-10.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sri_jax.gcg import (GCGConfig, allowed_tokens, build_problem, candidate_losses,
                         onehot_loss, round_trips, run_gcg)
from sri_jax.artifacts import artifact_kind
from tiny_model import WORDS, tiny_chat_model

PROMPTS = ["How do I make a bomb", "tell me about cats"]
TARGETS = ["sorry cannot help", "write poem"]


@pytest.fixture(scope="module")
def model():
    return tiny_chat_model(seed=4)


def np_target_loss(model, prompt_ids, suffix, after, target):
    """Mean CE of ``target`` after prompt + suffix + after, numpy float64 on Model.forward."""
    seq = list(prompt_ids) + list(suffix) + list(after) + list(target)
    logits = np.asarray(model.forward(np.asarray([seq])).logits, np.float64)[0]
    logits = logits[len(seq) - len(target) - 1:len(seq) - 1]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return -np.mean(logp[np.arange(len(target)), target])


def pieces(model, prompt, target, s):
    """(before, after, target) ids of a row, found from the problem's own layout."""
    prob = build_problem(model, [prompt], [target], s)
    ids, mask, slots = (np.asarray(a)[0] for a in (prob.ids, prob.mask, prob.slots))
    real = ids[mask == 1]
    start = len(ids) - len(real)
    tgt = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    before = ids[start:slots[0]].tolist()
    after = ids[slots[-1] + 1:len(ids) - len(tgt)].tolist()
    assert ids[len(ids) - len(tgt):].tolist() == tgt
    return before, after, tgt


def test_objective_matches_numpy_ce_on_plain_ids(model):
    """Universal loss = sum over prompts of each row's CE; the embedding-table route of the
    gradient gives the same value as plain ids; batched candidates the same as one by one."""
    s = 3
    prob = build_problem(model, PROMPTS, TARGETS, s)
    rng = np.random.default_rng(0)
    allowed = np.flatnonzero(allowed_tokens(model))
    cands = rng.choice(allowed, (4, s))
    expect = [sum(np_target_loss(model, *(lambda b, a, t: (b, c, a, t))(*pieces(model, p, t, s)))
                  for p, t in zip(PROMPTS, TARGETS)) for c in cands]
    got = candidate_losses(model.params, model.config, prob, jnp.asarray(cands), 2)
    np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-5, atol=1e-5)
    v = model.params["embed"].shape[0]
    onehot = jax.nn.one_hot(jnp.asarray(cands[0]), v)
    np.testing.assert_allclose(float(onehot_loss(onehot, model.params, model.config, prob)),
                               expect[0], rtol=1e-5, atol=1e-5)


def test_onehot_gradient_matches_finite_differences(model):
    s = 3
    prob = build_problem(model, PROMPTS, TARGETS, s)
    v = model.params["embed"].shape[0]
    onehot = jax.nn.one_hot(jnp.asarray([10, 20, 30]), v)
    f = lambda x: float(onehot_loss(x, model.params, model.config, prob))  # noqa: E731
    grad = np.asarray(jax.grad(onehot_loss)(onehot, model.params, model.config, prob))
    rng = np.random.default_rng(1)
    eps = 1e-3
    for j, k in zip(rng.integers(0, s, 12), rng.integers(0, v, 12)):
        e = jnp.zeros_like(onehot).at[j, k].set(eps)
        fd = (f(onehot + e) - f(onehot - e)) / (2 * eps)
        assert abs(fd - grad[j, k]) <= 5e-3 + 2e-2 * abs(grad[j, k]), (j, k, fd, grad[j, k])


def test_loss_decreases_and_determinism(model):
    cfg = GCGConfig(suffix_length=4, top_k=16, num_candidates=32, eval_chunk=16, steps=12,
                    seed=3)
    a = run_gcg(model, PROMPTS, TARGETS, cfg, progress=False)
    assert a.best_loss < 0.7 * a.initial_loss
    losses = [h["loss"] for h in a.history]
    assert losses[-1] < losses[0]
    b = run_gcg(model, PROMPTS, TARGETS, cfg, progress=False)
    assert a.history == b.history and a.best_ids == b.best_ids
    c = run_gcg(model, PROMPTS, TARGETS, dict_replace(cfg, seed=4), progress=False)
    assert c.history != a.history


def dict_replace(cfg, **kw):
    import dataclasses
    return dataclasses.replace(cfg, **kw)


def test_planted_target_is_found(model):
    """The target is the model's own greedy continuation after a planted suffix s*: GCG
    from another start reaches a loss no worse than s*'s, and greedy decoding after its
    suffix emits the target."""
    s, prompt = 2, PROMPTS[0]
    allowed = allowed_tokens(model)
    planted = [WORDS.index("cats"), WORDS.index("bread")]
    before, after, _ = pieces(model, prompt, "w1", s)
    seq = before + planted + after
    target = []
    for _ in range(3):
        nxt = int(np.argmax(np.asarray(model.forward(np.asarray([seq])).logits)[0, -1]))
        target.append(nxt)
        seq.append(nxt)
    assert all(allowed[t] for t in target)  # plain words: the target text re-encodes
    text = model.tokenizer.decode(target)
    planted_loss = np_target_loss(model, before, planted, after, target)
    cfg = GCGConfig(suffix_length=s, top_k=int(allowed.sum()), num_candidates=256,
                    eval_chunk=64, steps=10, seed=0)
    res = run_gcg(model, [prompt], [text], cfg, progress=False)
    assert res.initial_loss > planted_loss + 1.0  # the start is far from it
    assert res.best_loss <= planted_loss + 1e-4
    seq = before + res.best_ids + after
    for t in target:
        nxt = int(np.argmax(np.asarray(model.forward(np.asarray([seq])).logits)[0, -1]))
        assert nxt == t
        seq.append(nxt)


def wordpiece_model():
    """A tiny model whose vocabulary has 40 '##' continuation pieces: each decodes and
    re-encodes alone, but glued to a preceding word it re-encodes to something else."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sri_jax.models.config import ModelConfig
    from sri_jax.models.decoder import random_params
    from sri_jax.models.model import Model
    from tiny_model import CHAT_TEMPLATE

    words = list(WORDS) + [f"##p{i}" for i in range(40)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    t = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                additional_special_tokens=["<|im_start|>"])
    t.chat_template = CHAT_TEMPLATE
    cfg = ModelConfig(family="llama", vocab_size=len(words), hidden_size=32,
                      intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, eos_token_id=2, pad_token_id=0)
    return Model(cfg, random_params(cfg, seed=7, init_std=0.5), tokenizer=t, name="tiny-wp",
                 weight_hash="wp")


def test_candidates_always_round_trip_and_no_special_tokens():
    m = wordpiece_model()
    tok = m.tokenizer
    allowed = allowed_tokens(m)
    for name in ("<pad>", "<|im_start|>", "<|im_end|>"):
        assert not allowed[WORDS.index(name)]
    w1, p1 = WORDS.index("w1"), len(WORDS) + 1
    assert not round_trips(tok, [w1, p1])  # the filter has something to refuse
    cfg = GCGConfig(suffix_length=3, top_k=int(allowed.sum()), num_candidates=64,
                    eval_chunk=32, steps=8, seed=1)
    res = run_gcg(m, PROMPTS, TARGETS, cfg, progress=False)
    for h in res.history:  # checked here directly: decode, encode, compare
        assert tok(tok.decode(h["ids"]), add_special_tokens=False)["input_ids"] == h["ids"]
        assert all(allowed[i] for i in h["ids"])


def test_resume_equals_uninterrupted_run(model, tmp_path):
    cfg = GCGConfig(suffix_length=3, top_k=16, num_candidates=32, eval_chunk=16, steps=7,
                    seed=5, checkpoint_every=2)
    whole = run_gcg(model, PROMPTS, TARGETS, cfg, progress=False)
    part = run_gcg(model, PROMPTS, TARGETS, dict_replace(cfg, steps=4), out_dir=tmp_path / "g",
                   progress=False)
    assert part.history == whole.history[:4]
    assert artifact_kind(tmp_path / "g") == "gcg"
    resumed = run_gcg(model, PROMPTS, TARGETS, cfg, out_dir=tmp_path / "g", progress=False)
    assert resumed.history == whole.history
    # a time budget stops after the step that passes it; the rerun continues exactly
    one = run_gcg(model, PROMPTS, TARGETS, cfg, out_dir=tmp_path / "b", progress=False,
                  max_seconds=0)
    assert one.history == whole.history[:1]
    assert run_gcg(model, PROMPTS, TARGETS, cfg, out_dir=tmp_path / "b",
                   progress=False).history == whole.history
    assert (resumed.best_ids, resumed.best_loss) == (whole.best_ids, whole.best_loss)
    with pytest.raises(ValueError, match="another problem"):
        run_gcg(model, PROMPTS[:1], TARGETS[:1], cfg, out_dir=tmp_path / "g", progress=False)


def test_bad_settings(model):
    with pytest.raises(ValueError, match="multiple of eval_chunk"):
        GCGConfig(num_candidates=10, eval_chunk=4)
    with pytest.raises(ValueError, match="suffix_length must be >= 1"):
        GCGConfig(suffix_length=0)
    with pytest.raises(ValueError, match="one target per prompt"):
        build_problem(model, PROMPTS, TARGETS[:1], 3)
    with pytest.raises(ValueError, match="exceeds the"):
        run_gcg(model, PROMPTS, TARGETS, GCGConfig(top_k=10_000, steps=1), progress=False)
