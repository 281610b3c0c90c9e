"""sri_jax.artifacts: one writer/reader for every artifact payload (orbax tree, npz arrays,
JSON), and the shipped checkpoints/ still read unchanged through it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from sri_jax import artifacts
from sri_jax.detector import SRIGuard
from sri_jax.models.lora import load_adapter, save_adapter
from sri_jax.sri.centers import load_centers, save_centers

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "smollm2-135m-instruct-safe"


def _orbax_read(folder: Path):
    """The stored pytree, read with orbax directly (no target: the library is not involved)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ck:
        return jax.tree_util.tree_map(np.asarray, ck.restore(folder.absolute()))


def test_payload_io_is_written_once():
    """orbax, np.savez and temp-folder swaps appear only in the artifacts module (fetch.py
    keeps its own temp folder for pip downloads)."""
    src = {p: p.read_text() for p in (ROOT / "sri_jax").rglob("*.py")}
    for pattern, allowed in ((r"StandardCheckpointer\(", {"artifacts.py"}),
                             (r"np\.savez\(", {"artifacts.py"}),
                             (r"tempfile\.mkdtemp\(", {"artifacts.py", "fetch.py"})):
        users = {p.name for p, text in src.items() if re.search(pattern, text)}
        assert users == allowed, (pattern, users)


def test_shipped_checkpoints_load_unchanged(tmp_path):
    with np.load(SHIPPED / "centers" / "centers.npz") as z:
        want = {k: z[k] for k in ("harmless", "harmful")}
    c = load_centers(SHIPPED / "centers")
    np.testing.assert_array_equal(c.harmless, want["harmless"])
    np.testing.assert_array_equal(c.harmful, want["harmful"])
    assert dict(c.meta) == json.loads((SHIPPED / "centers" / "meta.json").read_text())

    g = SRIGuard.load(SHIPPED / "guard", centers=c)
    raw = _orbax_read(SHIPPED / "guard" / "params")
    for got, ref in zip(jax.tree_util.tree_leaves(g.params_), jax.tree_util.tree_leaves(raw)):
        np.testing.assert_array_equal(np.asarray(got), ref)
    assert g.threshold_ == json.loads((SHIPPED / "guard" / "detector.json").read_text())["threshold"]

    adapter, lcfg, meta = load_adapter(SHIPPED)  # checks the recorded adapter hash itself
    raw = _orbax_read(SHIPPED / "adapter")
    assert set(adapter) == set(raw)
    for name in raw:
        for p in ("a", "b"):
            np.testing.assert_array_equal(adapter[name][p], raw[name][p])

    # written again through the one writer: same arrays, a header of the right kind
    save_centers(c, tmp_path / "c")
    g.save(tmp_path / "g")
    save_adapter(tmp_path / "a", adapter, lcfg, base_weight_hash=meta["base_weight_hash"])
    for folder, kind in (("c", "centers"), ("g", "detector"), ("a", "adapter")):
        assert artifacts.artifact_kind(tmp_path / folder) == kind
    np.testing.assert_array_equal(load_centers(tmp_path / "c").harmful, want["harmful"])
    np.testing.assert_array_equal(SRIGuard.load(tmp_path / "g").params_["layers"][0]["kernel"],
                                  np.asarray(g.params_["layers"][0]["kernel"]))
    assert load_adapter(tmp_path / "a")[2]["adapter_hash"] == meta["adapter_hash"]


def test_finetune_step_checkpoints_old_and_new(tmp_path):
    """A step folder written before the header existed (plain orbax + progress.json) restores;
    new steps are atomic ``finetune-step`` artifacts and only the last two are kept."""
    import optax

    from sri_jax.finetune import _latest_ckpt, _restore_ckpt, _save_ckpt

    adapter = {"q": {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                     "b": np.ones((3, 2), np.float32)}}
    opt_state = optax.adam(1e-3).init(adapter)
    ck = tmp_path / "ck"
    old = ck / "step_000002"
    old.mkdir(parents=True)
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as c:  # the layout of earlier releases, by hand
        c.save((old / "state").absolute(), {"adapter": adapter, "opt": [
            np.asarray(x) for x in jax.tree_util.tree_leaves(opt_state)]})
        c.wait_until_finished()
    (old / "progress.json").write_text(json.dumps({"step": 2, "losses": [1.5, 1.25]}))
    assert _latest_ckpt(ck) == old
    a, o, step, losses = _restore_ckpt(old, adapter, opt_state)
    assert step == 2 and losses == [1.5, 1.25]
    np.testing.assert_array_equal(np.asarray(a["q"]["a"]), adapter["q"]["a"])

    bumped = jax.tree_util.tree_map(lambda x: x + 1, adapter)
    for s in (2, 4, 6):  # step 2 again replaces the old-format folder
        _save_ckpt(ck, s, bumped, opt_state, [0.5] * s)
    assert sorted(p.name for p in ck.iterdir()) == ["step_000004", "step_000006"]
    new = _latest_ckpt(ck)
    assert json.loads((new / artifacts.ARTIFACT_FILE).read_text())["kind"] == "finetune-step"
    a, _, step, losses = _restore_ckpt(new, adapter, opt_state)
    assert step == 6 and losses == [0.5] * 6
    np.testing.assert_array_equal(np.asarray(a["q"]["b"]), np.full((3, 2), 2, np.float32))
    shutil.rmtree(ck)


def test_npz_reader_names_the_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(artifacts.ArtifactError, match=r"x\.npz: cannot read the things .*; redo"):
        artifacts.load_arrays(bad, ("a",), "the things", "redo")


def test_shipped_qwen_guard_binds_to_its_centers():
    """The guard shipped for the natively aligned model loads with its own centers (same
    arrays as orbax reads, the threshold its evaluation report states) and refuses the
    default model's centers."""
    qwen = ROOT / "checkpoints" / "qwen2.5-coder-0.5b-instruct"
    c = load_centers(qwen / "centers")
    g = SRIGuard.load(qwen / "guard", centers=c)
    raw = _orbax_read(qwen / "guard" / "params")
    for got, ref in zip(jax.tree_util.tree_leaves(g.params_), jax.tree_util.tree_leaves(raw)):
        np.testing.assert_array_equal(np.asarray(got), ref)
    report = json.loads((qwen / "guard_eval.json").read_text())
    assert report["meta"]["model"] == c.meta["model"] == "qwen2.5-coder-0.5b-instruct"
    assert g.threshold_ == report["guard"]["threshold"]
    with pytest.raises(ValueError):
        SRIGuard.load(qwen / "guard", centers=load_centers(SHIPPED / "centers"))
