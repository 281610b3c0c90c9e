"""The README's Python example runs as written (on the tiny random chat model), and the public
API it uses is importable from the top level."""

import ast
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

import sri_jax
from tiny_model import tiny_chat_model

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_public_api_is_top_level(tmp_path):
    from sri_jax.detector import SRIGuard
    from sri_jax.calibration import calibrate
    from sri_jax.sri.centers import load_centers, save_centers
    from sri_jax.tracing import read_traces, trace

    for name, obj in (("SRIGuard", SRIGuard), ("calibrate", calibrate), ("trace", trace),
                      ("load_centers", load_centers), ("save_centers", save_centers),
                      ("read_traces", read_traces)):
        assert getattr(sri_jax, name) is obj and name in sri_jax.__all__
    c = sri_jax.Centers(np.arange(6.0).reshape(2, 3), -np.ones((2, 3)), {"k": 1})
    back = sri_jax.load_centers(sri_jax.save_centers(c, tmp_path / "c"),
                                allow_unverified=True)  # hand-made
    with pytest.raises(ValueError, match="cannot be verified"):
        sri_jax.load_centers(tmp_path / "c")
    np.testing.assert_array_equal(back.harmless, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(back.harmful, -np.ones((2, 3)))
    assert back.meta == {"k": 1}


def test_readme_imports_only_the_top_level():
    blocks = python_blocks()
    assert blocks, "README.md has no ```python block"
    for code in blocks:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom):
                assert node.module == "sri_jax" or not node.module.startswith("sri_jax"), \
                    node.module
            elif isinstance(node, ast.Import):
                assert all(a.name == "sri_jax" or not a.name.startswith("sri_jax.")
                           for a in node.names), [a.name for a in node.names]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """Exactly the README's code; only the model (tiny random, for speed and no download)
    and the judge (the random model never writes refusal phrases: every other text counts
    as a refusal, so both classes keep samples) are swapped in."""
    import sri_jax.judges.keyword

    model = tiny_chat_model(seed=3)
    calls = itertools.count()
    monkeypatch.setattr("sri_jax.weights.loader.load_model", lambda *a, **k: model)
    monkeypatch.setattr(sri_jax.judges.keyword, "is_refusal", lambda text: next(calls) % 2 == 1)
    monkeypatch.chdir(tmp_path)
    for code in python_blocks():
        scope = {}
        exec(compile(code, str(README), "exec"), scope)
    # what the example leaves behind is what it says
    res, centers = scope["res"], scope["centers"]
    assert res.flagged.shape == (len(scope["harmful"]),) and res.flagged.dtype == bool
    assert res.sri.shape == (len(scope["harmful"]), scope["cfg"].gen_length)
    back = sri_jax.load_centers(tmp_path / "my_centers")
    np.testing.assert_array_equal(back.harmless, centers.harmless)
    assert sorted(sri_jax.read_traces(tmp_path / "runs" / "benign")["prompt_id"]) == \
        ["0", "1", "2", "3"]
