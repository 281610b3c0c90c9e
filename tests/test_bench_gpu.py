"""scripts/bench_gpu.py at tiny shapes on the CPU (so the accelerator harness cannot rot): the
baseline's warm-up is excluded and its rate is a median over >= 8 prompts, sri_jax's first call
is excluded, the two sides agree on tokens and sigma (same weights, prompts and centers; fp32
here, so exactly), and the JSON names the command relative to the repository."""

import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tolerance import SIGMA_ATOL

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_gpu.py"


def _run(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def test_too_few_baseline_prompts_is_a_usage_error():
    r = _run("--tiny", "--baseline-prompts", "4", timeout=120)
    assert r.returncode == 2 and "--baseline-prompts must be >= 8" in r.stderr


def test_tiny_run_records_steady_state_medians_and_agreement(tmp_path):
    out = tmp_path / "gpu.json"
    r = _run("--tiny", "--dtype", "float32", "--dif-batches", "2", "--ar-batches", "2",
             "--budget-s", "900", "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert not doc.get("errors"), doc.get("errors")
    exe, script, *rest = shlex.split(doc["command"])
    assert not Path(exe).is_absolute() and script == "scripts/bench_gpu.py"
    assert rest[:3] == ["--tiny", "--dtype", "float32"]
    for key in ("diffusion", "ar"):
        base = doc["baseline"][key]
        times = base["times_s"]
        assert base["prompts"] == len(times) == 8 and base["warmup_s"] > 0
        assert base["median_s"] == statistics.median(times)
        assert base["prompts_per_s"] == pytest.approx(1.0 / statistics.median(times))
        sec = doc[key]
        assert sec["weights"].startswith("the baseline's")
        check = sec["check"]
        assert check["rows"] == check["token_rows_equal"] == 8, check
        assert check["sigma_max_abs_diff"] < SIGMA_ATOL, check
        assert sec["tokens_on_equal_off"] is True
        on, off = sec["runs"]
        assert (on["sri"], off["sri"], on["batch"], off["batch"]) == ("on", "off", 2, 2)
        for run in (on, off):  # the first (compiling) call is never among the timed ones
            assert run["status"] == "ok" and len(run["times_s"]) == doc["sizes"]["repeats"]
            assert run["median_s"] == statistics.median(run["times_s"])
            assert run["speedup_vs_baseline"] == pytest.approx(
                (2 / run["median_s"]) / base["prompts_per_s"])
