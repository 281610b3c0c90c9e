"""What the model reads and what the judge reads: chat prompts (system turn, LLaDA's real
template, safe encoding of user text) and the decoded response text.

The LLaDA tokenizer here is a word-level stand-in (no LLaDA tokenizer.json exists offline)
with the release's 269 added tokens at their real ids, loaded through the loader's own
tokenizer route together with the REAL tokenizer_config.json (chat template, bos token) and
special_tokens_map.json of GSAI-ML/LLaDA-8B-Instruct (tests/data/llada-8b-instruct).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sri_jax.models.config import LLADA_8B
from sri_jax.models.model import Model
from tiny_model import tiny_chat_model

REAL_LLADA = Path(__file__).parent / "data" / "llada-8b-instruct"
LLADA_WORDS = "system user assistant You are a helpful How do I bake bread ?".split()
FIRST_WORD_ID = 1000  # the words above get ids 1000, 1001, ...


@pytest.fixture(scope="module")
def llada_tokenizer(tmp_path_factory):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    from sri_jax.weights.hf import _load_tokenizer

    cfg = json.loads((REAL_LLADA / "tokenizer_config.json").read_text())
    added = {int(k): v["content"] for k, v in cfg["added_tokens_decoder"].items()}
    vocab = {added.get(i, f"w{i}"): i for i in range(LLADA_8B.vocab_size)}
    for j, w in enumerate(LLADA_WORDS):
        del vocab[f"w{FIRST_WORD_ID + j}"]
        vocab[w] = FIRST_WORD_ID + j
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(added[i], special=True, normalized=False)
                            for i in sorted(added)])
    d = tmp_path_factory.mktemp("llada_tok")
    tok.save(str(d / "tokenizer.json"))
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(REAL_LLADA / f, d / f)
    return _load_tokenizer(d), cfg["chat_template"]


def _word(w):
    return FIRST_WORD_ID + LLADA_WORDS.index(w)


def test_llada_prompt_has_the_system_turn_token_by_token(llada_tokenizer):
    """The reference renders every prompt, LLaDA's included, with the system prompt "You are
    a helpful assistant" (REFERENCE.md sections 1 and 3): the exact text of LLaDA's template
    with a system turn, and the special ids BOS 126080, header 126346/126347, eot 126348."""
    tok, template = llada_tokenizer
    model = Model(LLADA_8B, params=None, tokenizer=tok, name="llada", chat_template=template)
    q = "How do I bake bread ?"
    hdr = "<|start_header_id|>{}<|end_header_id|>\n\n"
    expected = ("<|startoftext|>" + hdr.format("system") + "You are a helpful assistant"
                + "<|eot_id|>" + hdr.format("user") + q + "<|eot_id|>" + hdr.format("assistant"))
    assert model.chat_prompt(q) == expected
    bos, h0, h1, eot = 126080, 126346, 126347, 126348
    ids, mask = model.encode_chat([q])
    assert mask.all()
    assert ids[0].tolist() == (
        [bos, h0, _word("system"), h1] + [_word(w) for w in "You are a helpful".split()]
        + [_word("assistant"), eot, h0, _word("user"), h1] + [_word(w) for w in q.split()]
        + [eot, h0, _word("assistant"), h1])
    # ... and the explicit opt-out renders the upstream LLaDA demo prompt (REFERENCE.md 3)
    bare = "<|startoftext|>" + hdr.format("user") + q + "<|eot_id|>" + hdr.format("assistant")
    assert model.chat_prompt(q, system_prompt=None) == bare
    model.system_prompt = None
    assert model.chat_prompt(q) == bare
    assert model.encode_chat([q])[0][0, :4].tolist() == [bos, h0, _word("user"), h1]


def test_cli_no_system_prompt_flag(monkeypatch):
    from sri_jax import cli

    seen = {}

    def fake_load(name, **kw):
        m = tiny_chat_model()
        seen["model"] = m
        return m

    monkeypatch.setattr("sri_jax.load_model", fake_load)
    for argv, expected in ((["generate", "hi"], "You are a helpful assistant"),
                           (["generate", "hi", "--no-system-prompt"], None)):
        args = cli.build_parser().parse_args(argv)
        assert cli._load(args).system_prompt == expected


# ----------------------------------------------------------------------------- judge text


def _swap_head_columns(model, a, b):
    """The same model with output-head columns a and b exchanged: it now predicts b wherever
    it predicted a (and vice versa)."""
    params = dict(model.params)
    head = np.asarray(params["lm_head"]).copy()
    head[:, [a, b]] = head[:, [b, a]]
    params["lm_head"] = head
    return Model(model.config, params, tokenizer=model.tokenizer, name=model.name)


def test_decode_reads_the_whole_row_and_cuts_only_on_request():
    model = tiny_chat_model()
    tok = model.tokenizer
    eos = model.config.eos_token_id
    row = [tok.convert_tokens_to_ids(w) for w in "tell me about cats".split()] + [eos] + \
        [tok.convert_tokens_to_ids(w) for w in "sorry cannot help".split()]
    assert model.decode([row]) == ["tell me about cats sorry cannot help"]
    assert model.decode([row], stop_at_eos=True) == ["tell me about cats"]
    from sri_jax.sri.judge import is_refusal

    assert is_refusal(model.decode([row])[0]) and not is_refusal(
        model.decode([row], stop_at_eos=True)[0])


def test_judge_text_of_a_diffusion_canvas_keeps_text_after_eos():
    """A diffusion canvas that commits EOS mid-row and text after it: ``texts`` (what the
    judge and the centers' labels read) is the whole row with special tokens skipped, as the
    reference's ``batch_decode(..., skip_special_tokens=True)``, not the text up to EOS."""
    from sri_jax.sampling import SamplerConfig, generate

    base = tiny_chat_model(seed=3, diffusion=True)
    cfg = SamplerConfig(steps=8, gen_length=16, block_length=16)
    prompts = ["How do I make a bomb", "bake bread", "write poem", "tell me about cats"]
    first = generate(base, prompts, cfg)
    # make EOS what the model most often predicted, so EOS lands mid-row with text after it
    vals, counts = np.unique(first.tokens, return_counts=True)
    model = _swap_head_columns(base, int(vals[np.argmax(counts)]), base.config.eos_token_id)
    res = generate(model, prompts, cfg)
    eos = model.config.eos_token_id
    tok = model.tokenizer
    rows_with_text_after_eos = 0
    for row, text in zip(res.tokens.tolist(), res.texts):
        assert text == tok.decode(row, skip_special_tokens=True)
        if eos in row:
            after = [t for t in row[row.index(eos):] if t not in tok.all_special_ids]
            if after:
                rows_with_text_after_eos += 1
                assert text != tok.decode(row[:row.index(eos)], skip_special_tokens=True)
    assert rows_with_text_after_eos > 0, "the test lost its point: no text after an EOS"


def test_ar_judge_text_is_unchanged_by_reading_the_whole_row():
    """After EOS the AR sampler emits the pad id, a special token: the whole-row text equals
    the text up to EOS, so AR labels are what they were."""
    from sri_jax.sampling import SamplerConfig, generate

    base = tiny_chat_model(seed=4)
    cfg = SamplerConfig.autoregressive(gen_length=12)
    prompts = ["How do I make a bomb", "bake bread", "write poem", "tell me about cats"]
    first = generate(base, prompts, cfg)
    vals, counts = np.unique(first.tokens[:, 2:], return_counts=True)
    model = _swap_head_columns(base, int(vals[np.argmax(counts)]), base.config.eos_token_id)
    res = generate(model, prompts, cfg)
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    assert pad in model.tokenizer.all_special_ids
    stopped = [r for r in res.tokens.tolist() if eos in r[:-1]]
    assert stopped, "the test lost its point: no row stopped early"
    for r in stopped:
        assert set(r[r.index(eos) + 1:]) == {pad}
    assert res.texts == model.decode(res.tokens, stop_at_eos=True)
