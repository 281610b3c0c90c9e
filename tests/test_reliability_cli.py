"""Bad command-line input, trace folders and reports (docs/reliability.md, "Commands, traces and
reports"): usage errors exit 2 up front with one line and no model load, run-time errors exit 1
with one line naming the input, and report/plot never count records silently wrong."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

import sri_jax
from sri_jax import cli
from sri_jax.data.attacks import ATTACKS
from sri_jax.data.sets import PROMPT_SETS, PromptSetError, load_prompt_set
from sri_jax.sampling import SamplerConfig
from sri_jax.calibration import calibrate
from sri_jax.sri.centers import save_centers
from sri_jax.tracing import TraceOptions, read_traces, trace
from sri_jax.weights.registry import REGISTRY
from tiny_model import HARMFUL, HARMLESS, parity_judge, tiny_chat_model

CFG = SamplerConfig.autoregressive(gen_length=6)



@pytest.fixture(scope="module")
def model():
    return tiny_chat_model(seed=3)


@pytest.fixture(scope="module")
def centers(model):
    return calibrate(model, HARMLESS, HARMFUL, CFG, judge=parity_judge, batch_size=4,
                     progress=False)


@pytest.fixture
def no_model(monkeypatch):
    """Usage errors must be found before any model is loaded."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded for a usage error")
    monkeypatch.setattr("sri_jax.weights.loader.load_model", refuse)


@pytest.fixture
def tiny_loader(monkeypatch, model):
    monkeypatch.setattr("sri_jax.weights.loader.load_model", lambda *a, **k: model)


@pytest.fixture(scope="module")
def centers_dir(tmp_path_factory, centers):
    return str(save_centers(centers, tmp_path_factory.mktemp("c") / "centers"))


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of an in-process `sri-jax` call."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ usage errors, up front

def _usage_cases(c, o):
    tr = ["trace", "--centers", c, "--prompts", "advbench", "--out", o]
    return [  # (argv, what the one line must name)
        (tr + ["--limit", "0"], "--limit"),
        (tr + ["--limit", "-3"], "--limit"),
        (["calibrate", "--out", o, "--limit", "0"], "--limit"),
        (["evaluate", "--out", o, "--n", "0"], "--n"),
        (["evaluate", "--out", o, "--n-test", "-1"], "--n-test"),
        (["evaluate", "--out", o, "--n-attack", "0"], "--n-attack"),
        (["evaluate", "--out", o, "--ppl-quantile", "nan"], "--ppl-quantile"),
        (["evaluate", "--out", o, "--attacks", "flip_attack,bogus"], "--attacks"),
        (["train-detector", "--centers", c, "--out", o, "--n-train", "0"], "--n-train"),
        (["train-detector", "--centers", c, "--out", o, "--quantile", "1.5"], "--quantile"),
        (["demo", "--n-test", "0"], "--n-test"),
        (["demo", "--batch-size", "0"], "--batch-size"),
        (["generate", "hi", "--batch-size", "0"], "--batch-size"),
        (tr + ["--batch-size", "-2"], "--batch-size"),
        (["finetune", "--batch-size", "0"], "--batch-size"),
        (["generate", "hi", "--tau", "nan"], "--tau"),
        (["generate", "hi", "--tau", "-inf"], "--tau"),
        (["generate", "hi", "--tau", "0"], "--tau"),
        (["generate", "hi", "--temperature", "nan"], "--temperature"),
        (["generate", "hi", "--temperature", "inf"], "--temperature"),
        (["generate", "hi", "--temperature", "-1"], "--temperature"),
        (["generate", "hi", "--top-p", "nan"], "--top-p"),
        (["generate", "hi", "--cfg-scale", "nan"], "--cfg-scale"),
        (["generate", "hi", "--gen-length", "0"], "--gen-length"),
        (["generate", "hi", "--top-k", "0"], "--top-k"),
        (["generate", "hi", "--layer", "top"], "--layer"),
        (tr + ["--attack", "bogus"], "--attack"),
        (["generate", os.fsdecode(b"caf\xe9 au lait")], "UTF-8"),
    ]


USAGE_IDS = [" ".join(a) for a, _ in _usage_cases("C", "O")]


@pytest.mark.parametrize("case", range(len(USAGE_IDS)), ids=USAGE_IDS)
def test_usage_errors_exit_2_before_any_model_load(case, tmp_path, no_model, capsys):
    argv, names = _usage_cases(str(tmp_path / "c"), str(tmp_path / "o"))[case]
    rc, out, err = run_cli(argv, capsys)
    line = one_line(err)
    assert rc == 2, err
    assert names in line, line
    assert not (tmp_path / "o").exists()


def test_non_utf8_argv_from_a_real_shell(tmp_path):
    """Bytes that are not UTF-8 in argv (Python hands them over as lone surrogates)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "sri_jax.cli", "generate", b"caf\xe9"],
                       capture_output=True, env=env, timeout=120)
    err = r.stderr.decode()
    line = one_line(err)
    assert r.returncode == 2 and "UTF-8" in line and "argument 2" in line, err


AR_ONLY_MISUSE = [(["--mode", "diffusion"], "--mode"), (["--mode", "ar_on_diffusion"], "--mode"),
                  (["--steps", "6"], "--steps"), (["--block-length", "2"], "--block-length"),
                  (["--remasking", "random"], "--remasking"), (["--cfg-scale", "1"], "--cfg-scale"),
                  (["--pooling", "committed"], "--pooling")]


@pytest.mark.parametrize("extra,flag", AR_ONLY_MISUSE, ids=[f for _, f in AR_ONLY_MISUSE])
def test_diffusion_options_on_an_ar_model_are_refused(extra, flag, tiny_loader, capsys):
    rc, out, err = run_cli(["generate", "hi", "--gen-length", "6", *extra], capsys)
    line = one_line(err)
    assert rc == 2 and flag in line and "autoregressive" in line, err
    assert out == ""


def test_options_a_diffusion_model_ignores_are_refused(monkeypatch, capsys):
    diff = tiny_chat_model(seed=1, diffusion=True)
    monkeypatch.setattr("sri_jax.weights.loader.load_model", lambda *a, **k: diff)
    rc, out, err = run_cli(["generate", "hi", "--gen-length", "4", "--steps", "4",
                            "--top-k", "5"], capsys)
    assert rc == 2 and "--top-k" in one_line(err), err
    # the options that apply still work: an AR flag set is fine on an AR model
    rc, out, err = run_cli(["generate", "hi", "--gen-length", "4", "--steps", "4",
                            "--mode", "ar_on_diffusion", "--block-length", "2"], capsys)
    assert rc == 2 and "--block-length" in one_line(err), err


def test_python_api_refuses_what_the_cli_refuses(model):
    with pytest.raises(ValueError, match="steps.*autoregressive"):
        SamplerConfig.for_model(model, steps=8)
    assert SamplerConfig.for_model(model, gen_length=5, mode="autoregressive").steps == 5
    for bad in (dict(tau=math.nan), dict(tau=math.inf), dict(temperature=math.nan),
                dict(temperature=math.inf), dict(top_p=math.nan), dict(cfg_scale=math.nan),
                dict(dream_eps=math.nan), dict(dream_alg_temp=math.nan)):
        key = next(iter(bad))
        with pytest.raises(ValueError, match=key):
            SamplerConfig.autoregressive(gen_length=4, **bad)


# ------------------------------------------------------------------ prompt files

@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".json"])
def test_prompt_file_not_utf8_names_file_and_offset(tmp_path, suffix):
    head = {".txt": b"a\n" * 10000, ".jsonl": b'{"prompt": "a"}\n' * 1000,
            ".csv": b"prompt\n" + b"a\n" * 5000, ".json": b'["a", "'}[suffix]
    f = tmp_path / f"prompts{suffix}"
    f.write_bytes(head + b"caf\xe9\n")
    with pytest.raises(PromptSetError) as e:
        load_prompt_set(str(f))
    msg = str(e.value)
    assert str(f) in msg and f"offset {len(head) + 3}" in msg and "UTF-8" in msg, msg


def test_cli_prompt_file_not_utf8_is_one_line_exit_1(tmp_path, centers_dir, tiny_loader, capsys):
    f = tmp_path / "p.txt"
    f.write_bytes(b"write a poem\nsteal a car \xff\n")
    rc, out, err = run_cli(["trace", "--centers", centers_dir, "--prompts", str(f),
                            "--gen-length", "6", "--out", str(tmp_path / "t")], capsys)
    line = one_line(err)
    assert rc == 1 and str(f) in line and "offset 25" in line, err


# ------------------------------------------------------------------ TOML config and help

def _parse(argv):
    return cli.parse_args(argv)


def test_config_top_level_keys_apply_where_they_exist(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('limit = 2\ntau = 0.2\n[trace]\nlimit = 3\n')
    tr = ["trace", "--centers", "c", "--prompts", "advbench", "--out", "o"]
    assert _parse(["--config", str(cfg), *tr]).limit == 3          # the table overrides
    assert _parse([*tr, "--config", str(cfg)]).limit == 3          # --config after the command
    assert _parse([*tr, "--config", str(cfg), "--limit", "4"]).limit == 4   # flags win
    a = _parse(["--config", str(cfg), "calibrate", "--out", "o"])
    assert a.limit == 2 and a.tau == 0.2                          # top level, no table
    g = _parse(["--config", str(cfg), "generate", "hi"])          # generate has no --limit
    assert g.tau == 0.2 and not hasattr(g, "limit")
    r = _parse(["report", "x", "--config", str(cfg)])               # neither limit nor tau
    assert r.traces == ["x"]


@pytest.mark.parametrize("text,names", [
    ("bogus = 1\n", "bogus"),
    ("[generate]\nlimit = 2\n", "limit"),
    ("[nosuch]\nlimit = 2\n", "nosuch"),
    ("limit = 0\n", "limit"),
    ("tau = nan\n", "tau"),
    ("[trace]\nmode = \"bogus\"\n", "mode"),
    ("[trace]\nsave_activations = \"yes\"\n", "save_activations"),
    ("limit = [\n", "run.toml"),
])
def test_config_errors_exit_2_with_one_line(tmp_path, text, names, no_model, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    rc, out, err = run_cli(["trace", "--config", str(cfg), "--centers", "c", "--prompts",
                            "advbench", "--out", str(tmp_path / "o")], capsys)
    line = one_line(err)
    assert rc == 2 and names in line and str(cfg) in line, err


def test_config_file_missing(tmp_path, no_model, capsys):
    cfg = tmp_path / "none.toml"
    rc, out, err = run_cli(["report", "x", "--config", str(cfg)], capsys)
    line = one_line(err)
    assert rc == 2 and str(cfg) in line and "existing TOML file" in line, err


def test_help_is_clean_and_lists_registered_values(capsys):
    rc, out, _ = run_cli(["--help"], capsys)
    assert rc == 0 and "``" not in out and "calibrate" in out
    rc, out, _ = run_cli(["trace", "--help"], capsys)
    flat = re.sub(r"\s+", "", out)
    assert rc == 0 and "``" not in out
    for name in list(PROMPT_SETS) + list(ATTACKS) + list(REGISTRY):
        assert name in flat, name
    rc, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert all(a in re.sub(r"\s+", "", out) for a in ATTACKS)


# ------------------------------------------------------------------ report and plot

PROMPTS = HARMLESS + HARMFUL  # 12 prompts, batch 4 -> 3 shards


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model, centers):
    """A complete run, a run killed after its first shard, and a run with another gen length."""
    root = tmp_path_factory.mktemp("runs")
    opts = TraceOptions(set_name="mix", batch_size=4, progress=False)
    kw = dict(centers=centers, judge=parity_judge, options=opts)
    full = trace(model, PROMPTS, CFG, out_dir=root / "full", **kw)
    part = trace(model, PROMPTS, CFG, out_dir=root / "part", **dict(kw, options=TraceOptions(
        set_name="mix", batch_size=4, progress=False, shard_filter=lambda i: i == 0)))
    cfg4 = SamplerConfig.autoregressive(gen_length=4)
    c4 = calibrate(model, HARMLESS, HARMFUL, cfg4, judge=parity_judge, batch_size=4,
                   progress=False)
    short = trace(model, PROMPTS[:5], cfg4, out_dir=root / "short",
                  **dict(kw, centers=c4))
    return {"full": str(full), "part": str(part), "short": str(short)}


def test_report_marks_a_partial_run(runs, capsys):
    rc, out, err = run_cli(["report", "--json", runs["part"]], capsys)
    line = one_line(err)
    rows = json.loads(out)
    n = len(read_traces(runs["part"])["sri"])
    assert rc == 0 and 0 < n < len(PROMPTS)
    assert rows[0]["n"] == n and rows[0]["planned"] == len(PROMPTS) and rows[0]["partial"]
    assert "partial" in line and f"{n} of {len(PROMPTS)}" in line and runs["part"] in line
    rc, out, err = run_cli(["report", runs["part"]], capsys)
    assert rc == 0 and "partial" in out and f"{n}/{len(PROMPTS)}" in out
    # a complete run says nothing and is not marked
    rc, out, err = run_cli(["report", "--json", runs["full"]], capsys)
    rows = json.loads(out)
    assert rc == 0 and err == "" and rows[0]["n"] == len(PROMPTS) and not rows[0]["partial"]


def test_report_counts_a_folder_passed_twice_once(runs, capsys):
    twice = [runs["full"], runs["full"] + "/", os.path.relpath(runs["full"])]
    rc, out, err = run_cli(["report", "--json", *twice], capsys)
    line = one_line(err)
    assert rc == 0 and json.loads(out)[0]["n"] == len(PROMPTS)
    assert "more than once" in line and runs["full"] in line


def test_report_and_plot_keep_generation_lengths_apart(runs, tmp_path, capsys):
    rc, out, err = run_cli(["report", "--json", runs["full"], runs["short"]], capsys)
    assert rc == 0, err
    rows = {r["group"]: r for r in json.loads(out)}
    assert set(rows) == {"mix [T=6]", "mix [T=4]"}
    full, short = read_traces(runs["full"]), read_traces(runs["short"])
    assert rows["mix [T=6]"]["n"] == 12 and rows["mix [T=4]"]["n"] == 5
    assert abs(rows["mix [T=4]"]["final_sigma"] - short["sri"][:, -1].mean()) < 1e-6
    assert abs(rows["mix [T=6]"]["mean_sigma"] - full["sri"].mean()) < 1e-6
    rc, out, err = run_cli(["plot", runs["full"], runs["short"], runs["part"],
                            "--out", str(tmp_path / "fig")], capsys)
    assert rc == 0, err
    assert (tmp_path / "fig" / "signal.png").read_bytes()[:4] == b"\x89PNG"
    assert "Traceback" not in err and "partial" in err and "lda.png" in err


def test_adapt_diffusion_max_length_too_small_is_a_usage_error(monkeypatch, capsys, tmp_path):
    """Before: a ValueError, exit 1; the model is never loaded."""
    monkeypatch.setattr("sri_jax.weights.loader.load_model",
                        lambda *a, **k: pytest.fail("loaded a model"))
    rc, _, err = run_cli(["adapt-diffusion", "--max-length", "20", "--gen-length", "32",
                          "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "--max-length 20" in one_line(err), err
