"""scripts/bench_frontier.py on the tiny stand-in (so the benchmark cannot rot): it runs end to
end, `blocks` (the cached sampler with its cache recomputed every step) reproduces the exact
LLaDA sampler through the script's own plumbing, a rerun resumes from the per-setting results
and gives the same rows, a work folder of other settings is refused, and the guard / attack
columns are computed from the right rows (planted traces, hand-computed expectations)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_frontier.py"
FIELDS = {"name", "prompts_per_s", "speedup_vs_exact", "nfe", "token_agreement",
          "refusal_agreement", "mean_abs_dsigma", "max_abs_dsigma", "refusal_rate",
          "mean_sigma"}


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def _module():
    spec = importlib.util.spec_from_file_location("bench_frontier", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_resumes_and_blocks_equals_exact(tmp_path):
    args = ["--quick", "--settings", "blocks,dual", "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "o.json"), "--figure", str(tmp_path / "f.png")]
    r = _run(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {x["name"]: x for x in json.loads((tmp_path / "o.json").read_text())["rows"]}
    assert list(rows) == ["exact", "blocks", "dual", "exact_again"]
    assert all(FIELDS <= set(x) for x in rows.values())
    # refreshed every step, the block-wise LLaDA decoder is the exact one: same tokens, and
    # sigma within fp32 rounding of the pooled layer output (values in (0, 1))
    assert rows["blocks"]["token_agreement"] == 1.0
    assert rows["blocks"]["max_abs_dsigma"] < 1e-5
    assert rows["dual"]["nfe"] == 8.0 and (tmp_path / "f.png").stat().st_size > 0
    # a rerun reads every setting back (timings included): identical rows
    r2 = _run(*args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = json.loads((tmp_path / "o.json").read_text())["rows"]
    assert again == list(rows.values())
    # a subset of the settings reads the same results back; --no-exact-again drops the rerun
    r4 = _run(*[a if a != "blocks,dual" else "dual" for a in args], "--no-exact-again",
              "--timing-rounds", "1")
    assert r4.returncode == 0, r4.stderr[-3000:]
    sub = json.loads((tmp_path / "o.json").read_text())["rows"]
    # ... plus the back-to-back timing ratio (exact against itself: 1)
    assert sub[0].pop("speedup_interleaved") == 1.0 and sub[1].pop("speedup_interleaved") > 0
    assert sub == [rows["exact"], rows["dual"]]
    # the same folder with other settings is refused, naming the fix
    r3 = _run(*[a if a != "blocks,dual" else "dual" for a in args], "--dream-alg", "topk_margin")
    assert r3.returncode != 0 and "pass another --work folder" in r3.stderr
    assert "Traceback" not in r3.stderr


def test_bad_arguments_are_usage_errors():
    r = _run("--prompts", "10", "--batch-size", "4", timeout=120)
    assert r.returncode == 2 and "multiple of --batch-size" in r.stderr
    r = _run("--settings", "exact,warp", timeout=120)
    assert r.returncode == 2 and "unknown ['warp']" in r.stderr
    r = _run("--held-out", timeout=120)
    assert r.returncode == 2 and "needs a model with a tokenizer" in r.stderr


class _Guard:
    """Score = 1 - mean sigma (low sigma = refusal-like = flagged), threshold 0.5."""
    threshold_ = 0.5

    def score_samples(self, s):
        return 1.0 - np.asarray(s).mean(1)


@pytest.fixture(scope="module")
def bf():
    return _module()


def test_row_guard_and_attack_columns_from_the_right_rows(bf):
    # 4 prompts, T = 2, D = 2: centers at e0 (harmless) and e1 (refusal); tau = 1
    c0, c1 = np.array([[1.0, 0.0]] * 2), np.array([[0.0, 1.0]] * 2)
    phi = np.array([[[0.0, 1.0]] * 2, [[1.0, 0.0]] * 2,     # harmful: refusal, complies
                    [[1.0, 0.0]] * 2, [[1.0, 0.0]] * 2])    # benign: both comply
    harmful = np.array([True, True, False, False])
    labels = np.array([True, False, False, True])
    res = (np.zeros((4, 3), int), phi, np.full(4, 2), 2.0, 0.0)
    out = bf.row("x", res, res, labels, labels, {"centers": (c0, c1), "tau": 1.0,
                                                 "guard": _Guard()}, harmful)
    assert out["harmful_refused"] == 0.5 and out["benign_refused"] == 0.5
    assert out["attack_success_keyword"] == 0.5
    # sigma of the refusal-center row is low, of the harmless-center rows high: the guard
    # flags row 0 only; harmful scores (high, low) vs benign (low, low): pairs 1, 1, 0.5,
    # 0.5 -> AUROC 0.75 (labels come from the judge, not from sigma)
    assert out["guard_tpr"] == 0.5 and out["guard_fpr"] == 0.0
    assert out["guard_auroc"] == 0.75
    assert out["prompts_per_s"] == 2.0 and out["speedup_vs_exact"] == 1.0
