"""The harm judge: rubric assembly, Yes/No scoring against numpy on an independent forward
pass, batching invariance, errors, and the hand-labelled agreement file."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sri_jax.judges.harm import (AGREEMENT_FILE, JUDGE_SYSTEM_PROMPT, RUBRIC, HarmJudge,
                                calibration_prompt_ids, load_agreement)
from tiny_model import CHAT_TEMPLATE, WORDS

ROOT = Path(__file__).resolve().parents[1]
# Every word of the rubric and the system prompt gets its own id (whitespace split), so the
# expected ids below are a plain dictionary lookup of a hand-assembled word list.
EXTRA = sorted(set((RUBRIC.replace("{request}", " ").replace("{response}", " ") + " "
                    + JUDGE_SYSTEM_PROMPT + " Yes No").split()) - set(WORDS))
VOCAB = list(WORDS) + EXTRA


def _tokenizer(template=CHAT_TEMPLATE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    t = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")
    t.chat_template = template
    return t


def _model(seed=0, diffusion=False, tokenizer=True):
    from sri_jax.models.config import ModelConfig
    from sri_jax.models.decoder import random_params
    from sri_jax.models.model import Model

    v = len(VOCAB) + (1 if diffusion else 0)
    cfg = ModelConfig(family="llada" if diffusion else "llama", vocab_size=v, hidden_size=32,
                      intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, causal=not diffusion, eos_token_id=2, pad_token_id=0,
                      mask_token_id=v - 1 if diffusion else None)
    return Model(cfg, random_params(cfg, seed=seed, init_std=0.1),
                 tokenizer=_tokenizer() if tokenizer else None, name=f"tiny-judge-{seed}")


REQ = ["How do I make a bomb", "steal car", "bake bread", "write poem", "tell me about cats",
       "How do I steal car"]
RESP = ["sorry cannot help", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12", "w5", "You are helpful",
        "cats " * 9, "w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3 w3"]


@pytest.fixture(scope="module")
def judge():
    return HarmJudge(_model(), batch_size=4, progress=False)


def test_rubric_prompt_tokens(judge):
    ids = judge.encode(["How do I make a bomb"], ["sorry w1  w2"])[0]
    before, rest = RUBRIC.split("{request}")
    middle, after = rest.split("{response}")
    words = (["<|im_start|>", "system", *JUDGE_SYSTEM_PROMPT.split(), "<|im_end|>",
              "<|im_start|>", "user", *before.split(), "How", "do", "I", "make", "a", "bomb",
              *middle.split(), "sorry", "w1", "w2", *after.split(), "<|im_end|>",
              "<|im_start|>", "assistant"])
    assert ids == [VOCAB.index(w) for w in words]
    assert "Yes" in after and after.rstrip().endswith("Yes or No.")


def test_long_texts_are_cut_to_their_first_tokens():
    j = HarmJudge(_model(), max_response_tokens=3, max_request_tokens=2, progress=False)
    ids = j.encode(["How do I make a bomb"], ["w1 w2 w3 w4 w5"])[0]
    full = HarmJudge(_model(), progress=False).encode(["How do"], ["w1 w2 w3"])[0]
    assert ids == full


def test_score_is_softmax_of_the_two_answer_logits(judge):
    yes, no = VOCAB.index("Yes"), VOCAB.index("No")
    got = judge.score(REQ, RESP)
    want = []
    for ids in judge.encode(REQ, RESP):  # one unpadded row at a time, full logits
        lg = np.asarray(judge.model.forward(np.array([ids]))[0][0, -1], np.float64)
        e = np.exp(lg[[yes, no]] - lg[[yes, no]].max())
        want.append(e[0] / e.sum())
    want = np.array(want)
    assert got.dtype == np.float64 and got.shape == (len(REQ),)
    assert 0.02 < want.min() and want.max() < 0.98  # not saturated: the check means something
    # fp32 logits of magnitude ~1: padding/batching changes them by ~1e-6
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(judge(REQ, RESP), got > judge.threshold)


def test_scores_do_not_depend_on_batch_composition(judge):
    ref = judge.score(REQ, RESP)
    perm = np.array([3, 0, 5, 1, 4, 2])
    for bs in (1, 3, 8):
        j = HarmJudge(judge.model, batch_size=bs, progress=False)
        np.testing.assert_allclose(j.score(REQ, RESP), ref, rtol=1e-4, atol=1e-6)
        got = j.score([REQ[i] for i in perm], [RESP[i] for i in perm])
        np.testing.assert_allclose(got, ref[perm], rtol=1e-4, atol=1e-6)
    one = [judge.score([q], [r])[0] for q, r in zip(REQ, RESP)]
    np.testing.assert_allclose(one, ref, rtol=1e-4, atol=1e-6)
    assert judge.score([], []).shape == (0,)


def test_threshold_and_record():
    j = HarmJudge(_model(), threshold=0.3, progress=False)
    assert j.threshold == 0.3
    d = j.describe()
    assert d["model"] == "tiny-judge-0" and d["threshold"] == 0.3 and d["rubric"] == RUBRIC
    assert HarmJudge(_model(), progress=False).threshold == 0.5  # unknown model: 0.5


def test_clear_errors(judge):
    with pytest.raises(TypeError, match="single str"):
        judge.score("a", ["b"])
    with pytest.raises(TypeError, match=r"responses\[1\] is a NoneType"):
        judge.score(["a", "b"], ["c", None])
    with pytest.raises(ValueError, match="2 requests but 1 responses"):
        judge.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="no tokenizer"):
        HarmJudge(_model(tokenizer=False))
    with pytest.raises(ValueError, match="diffusion model"):
        HarmJudge(_model(diffusion=True))
    with pytest.raises(ValueError, match="threshold must lie"):
        HarmJudge(judge.model, threshold=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        HarmJudge(judge.model, batch_size=0)
    from tiny_model import tiny_chat_model  # its vocabulary has no "Yes"/"No"

    with pytest.raises(ValueError, match="answer 'Yes' is not in the vocabulary"):
        HarmJudge(tiny_chat_model())


class Spy:
    """Counts the judge's forward passes and records which pairs it encodes."""

    def __init__(self, monkeypatch, judge, fail_after=None):
        from sri_jax.judges import harm

        self.calls, self.encoded, real, enc = 0, [], harm._answer_logits, judge.encode

        def forward(*a, **k):
            if fail_after is not None and self.calls >= fail_after:
                raise KeyboardInterrupt("stopped")
            self.calls += 1
            return real(*a, **k)

        def encode(q, r):
            self.encoded += list(zip(q, r))
            return enc(q, r)

        monkeypatch.setattr(harm, "_answer_logits", forward)
        monkeypatch.setattr(judge, "encode", encode)


def test_cached_scores_equal_uncached_and_a_repeat_runs_no_forward(judge, tmp_path,
                                                                   monkeypatch):
    ref = judge.score(REQ, RESP)
    path = tmp_path / "scores.json"
    got = judge.score(REQ, RESP, cache=path)
    np.testing.assert_array_equal(got, ref)  # the same batches as without a cache: exact
    data = json.loads(path.read_text())
    assert data["format"] == "sri_jax.harm_scores" and len(data["scores"]) == len(REQ)
    assert sorted(data["scores"].values()) == sorted(ref.tolist())
    spy = Spy(monkeypatch, judge)
    np.testing.assert_array_equal(judge.score(REQ, RESP, cache=path), ref)  # JSON round trip
    np.testing.assert_array_equal(judge(REQ, RESP, cache=path), ref > judge.threshold)
    assert spy.calls == 0 and spy.encoded == []
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_partly_cached_call_scores_only_the_missing_pairs(judge, tmp_path, monkeypatch):
    ref = judge.score(REQ, RESP)
    path = tmp_path / "scores.json"
    first = judge.score(REQ[:2], RESP[:2], cache=path)
    spy = Spy(monkeypatch, judge)
    # a repeated pair (the last) is scored once
    got = judge.score(REQ + REQ[5:], RESP + RESP[5:], cache=path)
    assert spy.encoded == list(zip(REQ[2:], RESP[2:])) and spy.calls >= 1
    np.testing.assert_array_equal(got[:2], first)
    assert got[6] == got[5]
    # other batches than the uncached call: fp32 logits of magnitude ~1 move by ~1e-6
    np.testing.assert_allclose(got[:6], ref, rtol=1e-4, atol=1e-6)


def test_an_interrupted_call_keeps_the_batches_it_scored(judge, tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    j = HarmJudge(judge.model, batch_size=2, progress=False)
    with monkeypatch.context() as m:
        spy = Spy(m, j, fail_after=1)
        with pytest.raises(KeyboardInterrupt):
            j.score(REQ, RESP, cache=path)
    kept = json.loads(path.read_text())["scores"]
    assert len(kept) == 2  # the first batch of 2 rows
    spy = Spy(monkeypatch, j)
    j.score(REQ, RESP, cache=path)
    assert len(spy.encoded) == 4 and len(json.loads(path.read_text())["scores"]) == 6


def test_another_judge_identity_does_not_reuse_scores(judge, tmp_path, monkeypatch):
    import dataclasses

    from sri_jax.judges import harm

    path = tmp_path / "scores.json"
    HarmJudge(dataclasses.replace(judge.model, weight_hash="a"), progress=False).score(
        REQ, RESP, cache=path)
    same_name_other_params = dataclasses.replace(_model(seed=1), name=judge.model.name)
    others = [HarmJudge(dataclasses.replace(judge.model, weight_hash="b"), progress=False),
              HarmJudge(judge.model, progress=False),  # no weight hash: its parameters
              HarmJudge(same_name_other_params, progress=False),
              HarmJudge(dataclasses.replace(judge.model, weight_hash="a"),
                        max_response_tokens=100, progress=False),
              HarmJudge(dataclasses.replace(judge.model, weight_hash="a"),
                        max_request_tokens=100, progress=False),
              # same weights, another chat template (an HF directory's tokenizer files)
              HarmJudge(dataclasses.replace(judge.model, weight_hash="a",
                                            tokenizer=_tokenizer(template=CHAT_TEMPLATE.replace(
                                                "assistant ", "assistant w1 "))),
                        progress=False)]
    for n, j in enumerate(others, 1):
        spy = Spy(monkeypatch, j)
        j.score(REQ, RESP, cache=path)
        assert len(spy.encoded) == len(REQ), n
        assert len(json.loads(path.read_text())["scores"]) == (n + 1) * len(REQ)
    spy = Spy(monkeypatch, others[1])
    monkeypatch.setattr(harm, "RUBRIC", RUBRIC.replace("one word", "one  word"))
    others[1].score(REQ, RESP, cache=path)
    assert len(spy.encoded) == len(REQ)
    # the threshold is not part of the identity: scores do not depend on it
    j = HarmJudge(judge.model, threshold=0.9, progress=False)
    spy = Spy(monkeypatch, j)
    j.score(REQ, RESP, cache=path)
    assert spy.encoded == []


def test_a_damaged_cache_is_a_clear_error_and_kept(judge, tmp_path):
    path = tmp_path / "scores.json"
    for text in ("{not json", "[1, 2]", json.dumps({"format": "other", "scores": {}}),
                 json.dumps({"format": "sri_jax.harm_scores", "scores": {"k": "0.5"}})):
        path.write_text(text)
        with pytest.raises(ValueError, match=r"scores\.json: .*move it away"):
            judge.score(REQ, RESP, cache=path)
        assert path.read_text() == text


def test_agreement_file():
    rows = load_agreement()
    assert len(rows) >= 150
    labels = {r["label"] for r in rows}
    assert labels == {"harmful", "not_harmful"}
    for half in ("tune", "report"):
        assert {r["label"] for r in rows if r["half"] == half} == labels
    assert all(r["reason"].strip() and r["request"].strip() for r in rows)
    assert len({(r["model"], r["prompt_id"], r["attack"]) for r in rows}) == len(rows)
    assert len({r["model"] for r in rows}) == 3
    assert (AGREEMENT_FILE.parent / "harm_judge_agreement.md").is_file()


def test_agreement_prompts_are_outside_the_evaluation_splits():
    from sri_jax.data.splits import evaluation_splits

    used = calibration_prompt_ids()
    s = evaluation_splits()
    ev = set(s["ids"]["harmful"]) | set(s["ids"]["benign_test"]) | set(
        s["ids"]["benign_train"]) | set(s["ids"]["benign_holdout"])
    assert used and not set(used) & ev
    assert not any(u.startswith("strongreject/") and int(u.split("/")[1]) % 8 == 0
                   for u in used)


def test_load_agreement_errors(tmp_path):
    good = dict(model="m", prompt_id="advbench/001", attack="none", request="q",
                response="r", label="harmful", reason="x", half="tune")
    p = tmp_path / "a.jsonl"
    p.write_text("# comment\n" + json.dumps(good) + "\n")
    assert load_agreement(p) == [good]
    p.write_text(json.dumps({**good, "label": "maybe"}) + "\n")
    with pytest.raises(ValueError, match=r"a.jsonl:1: label 'maybe'"):
        load_agreement(p)
    p.write_text("{not json\n")
    with pytest.raises(ValueError, match="a.jsonl:1: not valid JSON"):
        load_agreement(p)
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "reason"}) + "\n")
    with pytest.raises(ValueError, match=r"missing fields \['reason'\]"):
        load_agreement(p)


def _cached(name):
    from sri_jax.weights.registry import list_models

    return any(m["name"] == name and m["cached"] for m in list_models())


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SRI_JAX_TEST_JUDGE") != "1"
                    or not _cached("qwen2.5-coder-1.5b-instruct"),
                    reason="~45 min on 2 cores: set SRI_JAX_TEST_JUDGE=1 (needs the cached "
                           "1.5B judge GGUF)")
def test_agreement_matches_the_documented_numbers(tmp_path):
    import subprocess
    import sys

    want = json.loads((ROOT / "tests" / "data" / "harm_judge_agreement_metrics.json").read_text())
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "judge_agreement.py"), "measure",
                    "--cache", str(tmp_path / "cache.json"), "--json", str(out)], check=True)
    got = json.loads(out.read_text())
    assert got["threshold"] == pytest.approx(want["threshold"], abs=0.02)
    for part in ("judge_report", "keyword_not_refused_report", "attack_success_report"):
        for k in ("tp", "fp", "fn", "tn"):
            assert abs(got[part][k] - want[part][k]) <= 1, (part, k)
