"""The one batching path (sri_jax/sampling/batching.py): padding by hand-written arrays, input
order by a hand-made plan, each prompt encoded once and the centers checked once per run, the
Llama Guard adapter against a plain per-pair loop, and ``sri/`` free of upward imports."""

import ast
from pathlib import Path

import numpy as np
import pytest

from sri_jax.sampling import SamplerConfig, generate
from sri_jax.sampling.batching import batch_inputs, input_order, plan_batches
from sri_jax.sri import Centers
from tiny_model import tiny_chat_model


def test_batch_inputs_pads_once_to_bucket_rows_and_mesh():
    ids, mask = batch_inputs([[5, 6], [7]], 9, limit=100, rows=3)
    want = np.full((3, 16), 9)
    want[0, -2:] = [5, 6]
    want[1:, -1] = 7  # the short batch repeats its last row
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(mask, (want != 9).astype(int))
    assert ids.dtype == mask.dtype == np.int32

    # rows with their own (left-padded) mask are placed whole; a cap below 16 wins
    ids, mask = batch_inputs([np.array([1, 1, 4]), np.array([3, 4, 5])], 0, limit=4,
                             masks=[np.array([0, 0, 1]), np.array([1, 1, 1])])
    np.testing.assert_array_equal(ids, [[0, 1, 1, 4], [0, 3, 4, 5]])
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1], [0, 1, 1, 1]])

    class Mesh:  # the data axis is all batch_inputs reads of a mesh
        shape = {"data": 4}

    ids, _ = batch_inputs([[5]] * 3, 0, limit=100, rows=3, mesh=Mesh())
    assert ids.shape == (4, 16) and (ids[:, -1] == 5).all()


def test_input_order_undoes_the_plan():
    lengths = [30, 3, 17, 3, 9]
    batches = plan_batches(lengths, 2, 100)
    assert batches == [([1, 3], 2), ([4, 2], 2), ([0], 1)]
    rows = np.concatenate([idx for idx, _ in batches])  # what the batches return, in order
    np.testing.assert_array_equal(rows[input_order(batches)], np.arange(5))


def test_trace_encodes_each_prompt_once_and_checks_centers_once(tmp_path, monkeypatch):
    """Before: tokenised once to plan and again in every batch (repeats included), and the
    centers checked by the trace and again by every batch."""
    import sri_jax.sampling.api as api
    from sri_jax.tracing import TraceOptions, read_traces, trace

    model = tiny_chat_model(seed=3)
    cfg = SamplerConfig.autoregressive(gen_length=3)
    centers = Centers(np.ones((3, 32)), np.ones((3, 32)) * 2, {})
    prompts = ["How do I make a bomb", "tell me about cats", "write poem", "steal car",
               "bake bread"]
    encoded, checked = [], []
    real_encode, real_check = model._encode_one, api.check_compatible
    monkeypatch.setattr(model, "_encode_one", lambda p, *a: encoded.append(p) or
                        real_encode(p, *a))
    monkeypatch.setattr(api, "check_compatible", lambda *a, **k: checked.append(1) or
                        real_check(*a, **k))
    trace(model, prompts, cfg, centers=centers, out_dir=tmp_path / "t",
          options=TraceOptions(batch_size=2, progress=False))
    assert sorted(encoded) == sorted(prompts) and len(checked) == 1
    assert len(read_traces(tmp_path / "t")["prompt_id"]) == 5


def test_llama_guard_adapter_matches_a_plain_loop():
    """Length-sorted batches with repeated rows give each pair the verdict of generating it
    alone (the conversation rendered by the checkpoint's template, greedy)."""
    from sri_jax.detector.baselines import LlamaGuard3

    model = tiny_chat_model(seed=5)
    guard = LlamaGuard3(model=model, batch_size=2, max_new_tokens=3, content_format="string")
    prompts = ["How do I make a bomb", "write poem", "tell me about cats w1 w2 w3 w4 w5 w6"]
    responses = ["sorry cannot help", "w1 w2", "cats"]
    flagged = guard(prompts, responses)
    want = []
    for p, r in zip(prompts, responses):
        ids = model.tokenizer(guard.render(p, r), add_special_tokens=False)["input_ids"]
        want += generate(model, input_ids=np.array([ids]), cfg=guard.cfg).texts
    assert guard.verdicts_ == want and flagged.dtype == bool and flagged.shape == (3,)
    assert guard([], []).shape == (0,)


def test_self_examination_default_sampler_is_one_step_per_token():
    from sri_jax.detector.baselines import _answer_cfg

    assert _answer_cfg(tiny_chat_model(diffusion=True), None, 5) == \
        SamplerConfig(steps=5, gen_length=5, block_length=5)
    assert _answer_cfg(tiny_chat_model(), None, 5) == \
        SamplerConfig(mode="autoregressive", steps=5, gen_length=5, block_length=5)


def _imports(path: Path):
    pkg = ["sri_jax"] + list(path.relative_to(Path(__file__).parents[1] / "sri_jax").parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            yield ".".join(base + ([node.module] if node.module else []))


def test_sri_package_imports_nothing_above_it():
    """sri/ is pure math and the centers file: no sampling, calibration or judges (before:
    calibrate in sri/centers.py imported the sampler, which imports sri/centers)."""
    allowed = ("sri_jax.sri", "sri_jax.artifacts", "sri_jax._version")
    for path in (Path(__file__).parents[1] / "sri_jax" / "sri").glob("*.py"):
        for mod in _imports(path):
            if mod.startswith("sri_jax") and mod != "sri_jax":  # the root: __version__
                assert mod.startswith(allowed), f"{path.name} imports {mod}"


@pytest.mark.parametrize("name", ["is_refusal", "make_keyword_judge"])
def test_centers_record_the_keyword_judge_under_its_first_name(name):
    from sri_jax.judges import keyword

    judge = getattr(keyword, name)
    judge = judge if name == "is_refusal" else judge(["no"])
    assert keyword.judge_name(judge).startswith("sri_jax.sri.judge.")
