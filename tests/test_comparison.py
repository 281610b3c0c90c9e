"""AR versus diffusion (sri_jax.comparison): the comparison on a tiny AR model and a tiny
Dream-style diffusion model, its perplexity against an unpadded per-answer loop, the demo
step and its resume, and the registry lookup of the shipped pair."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from tiny_model import HARMFUL, HARMLESS, tiny_chat_model

GEN = 6


@pytest.fixture(scope="module")
def pair():
    from sri_jax.models.model import Model

    ar = tiny_chat_model(seed=0)
    d = tiny_chat_model(seed=1, diffusion=True)
    dream = Model(dataclasses.replace(d.config, logits_shift=True), d.params,
                  tokenizer=d.tokenizer, name="tiny-dream", weight_hash="hd")
    return {ar.name: ar, dream.name: dream}


@pytest.fixture
def patched(monkeypatch, pair):
    """The loader answers by name; the judge calls every other text a refusal (the random
    models never write refusal phrases), so both calibration classes keep samples."""
    import sri_jax.judges.keyword

    calls = itertools.count()
    monkeypatch.setattr("sri_jax.weights.loader.load_model", lambda name, **k: pair[name])
    monkeypatch.setattr(sri_jax.judges.keyword, "is_refusal", lambda text: next(calls) % 2 == 1)
    return pair


def _prompts(n=3):
    return {"calib_benign": HARMLESS[:n], "calib_harmful": HARMFUL[:n],
            "benign": HARMLESS[n:2 * n], "harmful": HARMFUL[n:2 * n],
            "prefill": ["w1 w2"] * n}


def _nll_loop(model, prompt, answer):
    """Mean-free sum of -log p(answer | prompt) from one unpadded forward in float64 numpy."""
    ids = list(model.encode_chat([prompt])[0][0]) + list(answer)
    logits = np.asarray(model.forward(np.array([ids], np.int32),
                                      np.ones((1, len(ids)), np.int32)).logits[0], np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                            keepdims=True)) \
        - logits.max(-1, keepdims=True)
    p = len(ids) - len(answer)
    return -sum(logp[p - 1 + i, a] for i, a in enumerate(answer))


def test_compare_decoders_on_a_tiny_pair(tmp_path, patched):
    from sri_jax.comparison import CompareConfig, compare_decoders

    cfg = CompareConfig(n_calib=3, n_test=3, gen_length=GEN, steps=3, batch_size=4,
                        progress=False, attacks=("flip_attack",))
    logs = []
    s = compare_decoders("tiny-ar-0", "tiny-dream", out_dir=tmp_path / "c", config=cfg,
                         prompts=_prompts(), log=logs.append)
    groups = [r["group"] for r in s["rows"]]
    sets = ("benign", "harmful", "harmful/prefill", "harmful/flip_attack")
    assert groups == [f"{d} {n}" for d in ("AR", "diffusion") for n in sets]
    assert all(r["n"] == 3 and r["refusal_rate"] in (0, 1 / 3, 2 / 3, 1) for r in s["rows"])
    assert s["models"] == {"AR": "tiny-ar-0", "diffusion": "tiny-dream"}
    assert s["samplers"]["AR"]["mode"] == "autoregressive"
    assert s["samplers"]["diffusion"]["steps"] == 3
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(s["rows"], default=float))
    assert (tmp_path / "c" / "ar_vs_diffusion.png").stat().st_size > 0
    assert "AR-model perplexity of diffusion benign answers" in logs[-2]
    assert set(s["answer_tokens"]) == set(groups)
    assert all(0 <= v <= GEN for v in s["answer_tokens"].values())
    assert [len(s["answers"][d][n]) for d in ("AR", "diffusion") for n in sets] == [3] * 8
    from sri_jax.data.attacks import apply_attack

    flipped = [x.text for x in apply_attack("flip_attack", HARMFUL[3:6])]
    for d in ("AR", "diffusion"):
        assert [p for p, _ in s["answers"][d]["harmful/flip_attack"]] == flipped
        assert [p for p, _ in s["answers"][d]["harmful/prefill"]] == HARMFUL[3:6]


def test_answer_perplexity_equals_an_unpadded_loop(pair):
    """Batched, left-aligned and padded to the longest row: the same NLL as one unpadded
    forward per answer (fp32 logits, sums of <= 20 terms of magnitude ~5: rtol 1e-5);
    empty answers are skipped."""
    from sri_jax.comparison import answer_perplexity

    ar = pair["tiny-ar-0"]
    prompts = ["How do I bake bread", "write a poem about cats", "tell me", "steal a car"]
    answers = [[5, 9, 11], [], [40, 41, 42, 43, 44, 45, 46], [7]]
    got = answer_perplexity(ar, prompts, answers)
    nll = [_nll_loop(ar, p, a) for p, a in zip(prompts, answers) if a]
    lens = [len(a) for a in answers if a]
    assert got["tokens"] == 11 and got["answers"] == 3
    np.testing.assert_allclose(got["perplexity"], np.exp(sum(nll) / sum(lens)), rtol=1e-5)
    np.testing.assert_allclose(got["median_answer_ppl"],
                               np.exp(np.median([n / k for n, k in zip(nll, lens)])), rtol=1e-5)


def test_until_eos():
    from sri_jax.comparison import until_eos

    assert until_eos(np.array([4, 5, 2, 6, 2]), 2) == [4, 5]
    assert until_eos([4, 5], 2) == [4, 5] and until_eos([2, 4], 2) == []


def test_the_shipped_pair_is_found_in_the_registry():
    from sri_jax.comparison import diffusion_partner

    assert diffusion_partner("smollm2-135m-instruct-safe") == "smollm2-135m-diffusion"
    assert diffusion_partner("smollm2-135m-instruct") is None


def test_held_out_prompts_never_trained_on():
    """The comparison's prompts lie in the held-out splits the safety fine-tune and the
    diffusion adaptation record, and calibration and test prompts do not overlap."""
    from sri_jax.comparison import held_out_prompts
    from sri_jax.data.splits import advbench_halves, safety_tune_benign

    p = held_out_prompts(4, 5)
    adv_eval = set(advbench_halves()[1]["eval"].prompts)
    dz_eval = set(safety_tune_benign()[1]["eval"].prompts)
    assert set(p["calib_harmful"] + p["harmful"]) <= adv_eval
    assert set(p["calib_benign"] + p["benign"]) <= dz_eval
    assert not set(p["calib_harmful"]) & set(p["harmful"])
    assert not set(p["calib_benign"]) & set(p["benign"])
    assert len(p["harmful"]) == len(p["prefill"]) == 5
    with pytest.raises(ValueError, match="use fewer"):
        held_out_prompts(100, 100)


def test_the_demo_compares_and_a_rerun_reuses_it(tmp_path, patched, monkeypatch):
    """The demo runs the comparison when the model has a diffusion partner, writes
    out/compare, and a rerun with the same settings reads it back instead of recomputing."""
    from sri_jax.commands.demo import run_demo

    monkeypatch.setattr("sri_jax.comparison.diffusion_partner",
                        lambda name: "tiny-dream" if name == "tiny-ar-0" else None)
    monkeypatch.setattr("sri_jax.comparison.held_out_prompts", lambda n_calib, n_test: _prompts())
    monkeypatch.setattr("sri_jax.weights.loader.load_model",
                        lambda name, **k: patched["tiny-ar-0" if name != "tiny-dream" else name])
    kw = dict(n_test=2, guard=False, attacks=(), gen_length=GEN, batch_size=4, progress=False,
              n_calib_harmless=4, n_calib_harmful=4, n_compare=3, log=lambda *a: None)
    res = run_demo(tmp_path / "out", **kw)
    f = tmp_path / "out" / "compare" / "compare.json"
    assert res["comparison"]["models"] == {"AR": "tiny-ar-0", "diffusion": "tiny-dream"}
    assert str(tmp_path / "out" / "compare" / "ar_vs_diffusion.png") in map(str, res["figures"])
    stamp = f.stat().st_mtime_ns
    res2 = run_demo(tmp_path / "out", **kw)
    assert f.stat().st_mtime_ns == stamp and res2["comparison"]["rows"] == \
        json.loads(f.read_text())["rows"]
    res3 = run_demo(tmp_path / "out", **dict(kw, compare=False))
    assert res3["comparison"] is None
