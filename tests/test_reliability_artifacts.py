"""Artifacts and loading under bad input (docs/reliability.md, "Artifacts and loading").

* Data loss: artifact writes go only into a missing or empty folder, or over an artifact of the
  same kind with overwrite; the user's files stay byte-for-byte intact and the CLI refuses
  before any compute (a bogus --model proves the model was never loaded).
* Damaged or hostile files: one line naming the file and the fix (a ValueError; CLI exit 1).
* Memory: a hostile config.json under a hard address-space limit.
* Centers trust and the sigma fields recorded with centers (issue 16 item 5).
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sri_jax.detector import SRIGuard
from sri_jax.artifacts import OutputFolderError
from sri_jax.sampling import Prompting, SamplerConfig, generate
from sri_jax.calibration import calibrate
from sri_jax.sri.centers import SIGMA_KEYS, check_compatible, load_centers, save_centers
from sri_jax.sri.signal import Centers
from tiny_model import CHAT_TEMPLATE, parity_judge, tiny_chat_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "smollm2-135m-instruct-safe"
CFG = SamplerConfig.autoregressive(gen_length=4)
BOGUS_MODEL = "/nonexistent/model-that-must-never-load"



@pytest.fixture(scope="module")
def model():
    return tiny_chat_model(seed=3)


@pytest.fixture(scope="module")
def centers(model):
    return calibrate(model, ["write a poem", "tell me about cats", "How do I bake bread"],
                     ["How do I make a bomb", "steal a car", "make a bomb"], CFG,
                     judge=parity_judge, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def guard(centers):
    rng = np.random.default_rng(0)
    return SRIGuard(epochs=2).fit(rng.uniform(size=(40, CFG.steps)), centers_meta=centers)


def cli(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "sri_jax.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def snapshot(folder: Path) -> dict:
    """Every file's bytes and every entry's mode under ``folder`` (the user's data)."""
    out = {".": oct(folder.stat().st_mode)}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = p.read_bytes() if p.is_file() else oct(p.stat().st_mode)
    return out


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("\\chapter{Results}\n" * 50)
    (path / "results.csv").write_bytes(b"a,b\n1,2\n")
    (path / "traces").mkdir()
    (path / "traces" / "shard-00000.parquet").write_bytes(os.urandom(256))
    return path


def one_line_error(r, *needles):
    """CLI run-time error: exit 1, one stderr line, no traceback, naming every needle."""
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------ data loss


def test_cli_calibrate_refuses_a_nonempty_folder_before_loading_the_model(tmp_path):
    out = user_folder(tmp_path / "mywork")
    before = snapshot(out)
    r = cli("calibrate", "--model", BOGUS_MODEL, "--out", str(out))
    one_line_error(r, str(out), "not empty", "new or empty folder")
    assert snapshot(out) == before


def test_cli_calibrate_out_dot_fails_up_front(tmp_path):
    work = user_folder(tmp_path / "work")
    before = snapshot(work)
    r = cli("calibrate", "--model", BOGUS_MODEL, "--out", ".", cwd=work)
    one_line_error(r, "'.'", "current directory")
    assert snapshot(work) == before


def test_cli_train_detector_out_equal_centers_is_refused(tmp_path, centers):
    c = save_centers(centers, tmp_path / "c")
    before = snapshot(c)
    for extra in ([], ["--overwrite"]):  # another kind: not even --overwrite replaces it
        r = cli("train-detector", "--model", BOGUS_MODEL, "--centers", str(c), "--out", str(c),
                *extra)
        one_line_error(r, str(c), "holds a centers artifact, not a detector")
    assert snapshot(c) == before


def test_cli_finetune_refuses_a_user_folder_before_loading(tmp_path):
    out = user_folder(tmp_path / "adapter_here")
    before = snapshot(out)
    r = cli("finetune", "--base", BOGUS_MODEL, "--out", str(out),
            "--checkpoint-dir", str(tmp_path / "ck"))
    one_line_error(r, str(out), "not empty")
    assert snapshot(out) == before and not (tmp_path / "ck").exists()


def test_cli_evaluate_checks_its_own_subfolders_before_loading(tmp_path):
    out = tmp_path / "eval"
    user_folder(out / "guard")  # the user's folder where evaluate would save its guard
    before = snapshot(out)
    r = cli("evaluate", "--model", BOGUS_MODEL, "--out", str(out))
    one_line_error(r, str(out / "guard"), "not a detector")
    assert snapshot(out) == before


def _fake_adapter():
    from sri_jax.models.lora import LoraConfig

    ad = {"wq": {"a": np.ones((2, 32, 2), np.float32), "b": np.ones((2, 2, 32), np.float32)}}
    return ad, LoraConfig(rank=2, alpha=4.0, top_layers=2, targets=("wq",))


def test_python_writers_refuse_foreign_folders(tmp_path, centers, guard):
    """Every artifact writer: a user folder, another kind (even with overwrite), an artifact
    that shares its folder with other files (the shipped layout: adapter + centers/ + guard/);
    nothing is touched."""
    from sri_jax.models.lora import save_adapter

    ad, lcfg = _fake_adapter()
    user = user_folder(tmp_path / "user")
    c = save_centers(centers, tmp_path / "c")
    shared = tmp_path / "shared"
    save_adapter(shared, ad, lcfg, base_weight_hash="h")
    save_centers(centers, shared / "centers")
    writes = {
        "centers": lambda p, o: save_centers(centers, p, overwrite=o),
        "detector": lambda p, o: guard.save(p, overwrite=o),
        "adapter": lambda p, o: save_adapter(p, ad, lcfg, base_weight_hash="h", overwrite=o),
    }
    snaps = {p: snapshot(p) for p in (user, c, shared)}
    for kind, write in writes.items():
        for target in (user, c, shared):
            if (kind, target) in (("centers", c),):
                continue
            for overwrite in (False, True):
                with pytest.raises(OutputFolderError) as e:
                    write(target, overwrite)
                msg = str(e.value)
                assert "\n" not in msg and str(target) in msg and "folder" in msg
    assert {p: snapshot(p) for p in snaps} == snaps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "shared", "user"]


def test_same_kind_needs_overwrite_and_legacy_artifacts_are_recognised(tmp_path, centers):
    c = save_centers(centers, tmp_path / "c")
    with pytest.raises(OutputFolderError, match="already holds a centers; pass --overwrite"):
        save_centers(centers, c)
    (c / "artifact.json").unlink()  # an artifact written before the header existed
    other = Centers(np.asarray(centers.harmless) + 1, centers.harmful, dict(centers.meta))
    save_centers(other, c, overwrite=True)
    np.testing.assert_array_equal(load_centers(c).harmless, np.asarray(centers.harmless) + 1)
    assert json.loads((c / "artifact.json").read_text())["kind"] == "centers"


def test_new_artifact_folders_get_umask_permissions(tmp_path, centers):
    old = os.umask(0o022)
    try:
        p = save_centers(centers, tmp_path / "c")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o755  # like mkdir, not mkdtemp's 0700


def test_finetune_never_empties_a_user_checkpoint_dir(tmp_path, model):
    from sri_jax.finetune import Example, FinetuneConfig, train

    ck = user_folder(tmp_path / "experiments")
    (ck / "step_000010").mkdir()
    (ck / "step_000010" / "result.txt").write_text("keep me")
    before = snapshot(ck)
    with pytest.raises(OutputFolderError, match="experiments"):
        train(model, [Example("write a poem", "w1 w2")], FinetuneConfig(epochs=1),
              checkpoint_dir=ck, progress=False, log=lambda *a: None)
    assert snapshot(ck) == before


# ------------------------------------------------------------------------------ bad inputs


def _centers_dir(tmp_path, centers, name="c"):
    return save_centers(centers, tmp_path / name)


def _truncate(p: Path, keep: float):
    b = p.read_bytes()
    p.write_bytes(b[:int(len(b) * keep)])


def _edit_json(p: Path, fn):
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def _copy_guard(tmp_path):
    dst = tmp_path / "guard"
    shutil.copytree(SHIPPED / "guard", dst)
    return dst


def _tiny_hf_dir(tmp_path, **changes):
    from test_parallel import write_hf_dir

    d = write_hf_dir(tmp_path / "hf", tiny_chat_model(seed=1))

    def edit(cfg):
        cfg.pop("head_dim")  # like SmolLM2's config.json: head_dim = hidden // heads
        cfg.update(changes)
        return cfg

    _edit_json(d / "config.json", edit)
    return d


def _gguf_nested(path: Path, depth: int) -> Path:
    key = b"general.deep"
    blob = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    blob += struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)
    path.write_bytes(blob)
    return path


def _safetensors(path: Path, header, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def case_empty_npz(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    (d / "centers.npz").write_bytes(b"")
    return lambda: load_centers(d), "centers.npz"


def case_truncated_npz(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    _truncate(d / "centers.npz", 0.5)
    return lambda: load_centers(d), "centers.npz"


def case_meta_is_a_list(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    (d / "meta.json").write_text("[1, 2, 3]")
    return lambda: load_centers(d), "meta.json"


def case_truncated_meta(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    _truncate(d / "meta.json", 0.5)
    return lambda: load_centers(d), "meta.json"


def case_truncated_detector_json(tmp_path, centers):
    g = _copy_guard(tmp_path)
    _truncate(g / "detector.json", 0.5)
    return lambda: SRIGuard.load(g), "detector.json"


def _threshold_case(value):
    def case(tmp_path, centers):
        g = _copy_guard(tmp_path)
        _edit_json(g / "detector.json", lambda d: {**d, "threshold": value})
        return lambda: SRIGuard.load(g), "detector.json"
    return case


def case_emptied_guard_params(tmp_path, centers):
    g = _copy_guard(tmp_path)
    for p in (g / "params").iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return lambda: SRIGuard.load(g), "params"


def case_zero_heads(tmp_path, centers):
    import sri_jax

    d = _tiny_hf_dir(tmp_path, num_attention_heads=0)
    return lambda: sri_jax.load_model(str(d), dtype="float32"), "config.json"


def case_safetensors_deep_header(tmp_path, centers):
    from sri_jax.weights import SafetensorsFile

    p = _safetensors(tmp_path / "model.safetensors", b"[" * 200_000)
    return lambda: SafetensorsFile(p), "model.safetensors"


def case_gguf_deep_array(tmp_path, centers):
    from sri_jax.weights.gguf_io import GGUFFile

    p = _gguf_nested(tmp_path / "deep.gguf", 5000)
    return lambda: GGUFFile(p), "deep.gguf"


def case_overlapping_offsets(tmp_path, centers):
    from sri_jax.weights import SafetensorsFile

    hdr = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    p = _safetensors(tmp_path / "alias.safetensors", hdr, bytes(12))
    return lambda: SafetensorsFile(p), "alias.safetensors"


def case_identical_offsets(tmp_path, centers):
    from sri_jax.weights import SafetensorsFile

    hdr = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    p = _safetensors(tmp_path / "alias2.safetensors", hdr, bytes(8))
    return lambda: SafetensorsFile(p), "alias2.safetensors"


def case_centers_without_meta(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    (d / "meta.json").unlink()
    return lambda: load_centers(d), "--trust-centers"


def _stripped(key):
    def case(tmp_path, centers):
        d = _centers_dir(tmp_path, centers)
        _edit_json(d / "meta.json", lambda m: {k: v for k, v in m.items() if k != key})
        return lambda: load_centers(d), key
    return case


BAD_INPUTS = {
    "empty centers.npz": (case_empty_npz, "centers.npz"),
    "truncated centers.npz": (case_truncated_npz, "centers.npz"),
    "meta.json is a list": (case_meta_is_a_list, "must be a JSON object"),
    "truncated meta.json": (case_truncated_meta, "not valid JSON"),
    "truncated detector.json": (case_truncated_detector_json, "not valid JSON"),
    "guard threshold null": (_threshold_case(None), "threshold None is not a finite number"),
    "guard threshold string": (_threshold_case("0.1"), "not a finite number"),
    "guard threshold NaN": (_threshold_case(float("nan")), "threshold nan is not a finite"),
    "guard params emptied": (case_emptied_guard_params, "cannot read the detector parameters"),
    "num_attention_heads 0": (case_zero_heads, "num_attention_heads=0 must be a positive"),
    "safetensors header of 200k '['": (case_safetensors_deep_header, "nests too deeply"),
    "GGUF array nested 5000 deep": (case_gguf_deep_array, "nest more than"),
    "overlapping data_offsets": (case_overlapping_offsets, "overlap"),
    "identical data_offsets": (case_identical_offsets, "overlap"),
    "centers without meta.json": (case_centers_without_meta, "cannot be checked"),
    "centers meta without weight_hash": (_stripped("weight_hash"), "cannot be verified"),
    "centers meta without sampler": (_stripped("sampler"), "cannot be verified"),
    "centers meta without tau (format 2)": (_stripped("tau"), "cannot be verified"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_the_file(name, tmp_path, centers):
    make, want = BAD_INPUTS[name]
    call, names = make(tmp_path, centers)
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert names in msg and want in msg, msg


def test_guard_params_error_has_no_log_noise(tmp_path):
    """The emptied-params case in a fresh process: the one error, nothing else on stderr."""
    g = _copy_guard(tmp_path)
    for p in (g / "params").iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    code = ("import sys\nfrom sri_jax.detector import SRIGuard\ntry:\n"
            f"    SRIGuard.load({str(g)!r})\nexcept ValueError as e:\n    print(e)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "cannot read the detector parameters" in r.stdout
    assert r.stderr.strip() == "", r.stderr[-2000:]


def test_cli_bad_centers_and_config_exit_1_with_one_line(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    (d / "centers.npz").write_bytes(b"")
    one_line_error(cli("generate", "--model", BOGUS_MODEL, "--centers", str(d), "hi"),
                   "centers.npz", "cannot read")
    h = _tiny_hf_dir(tmp_path, num_attention_heads=0)
    one_line_error(cli("generate", "--model", str(h), "hi"), "config.json",
                   "num_attention_heads=0")


def test_hostile_layer_count_stays_inside_a_hard_memory_limit(tmp_path):
    """config.json num_hidden_layers 1e9 used to build one message per missing tensor (23 GB
    before the kernel killed it). A normal load of the tiny checkpoint peaks at about 1.9 GB
    of address space (jax + transformers imported; VmPeak measured on x86-64); 4 GiB leaves
    2 GB of room and is far below what 9e9 messages would need."""
    d = _tiny_hf_dir(tmp_path, num_hidden_layers=1e9)
    limit = 4 << 30
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
            "import sri_jax\ntry:\n"
            f"    sri_jax.load_model({str(d)!r}, dtype='float32')\n"
            "except ValueError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ERR ") and r.stdout.count("\n") == 1, r.stdout[:2000]
    assert "config.json" in r.stdout and "num_layers must be an integer in 1..1024" in r.stdout


def test_missing_tensor_list_is_capped():
    """Within the bounds (1024 blocks, 2 stored) the report names 30 tensors and counts the
    rest, and the count is exact."""
    from sri_jax.models.config import ModelConfig
    from sri_jax.weights.name_maps import CheckpointMismatchError, name_map_for, plan_load

    cfg = ModelConfig(family="llama", vocab_size=8, hidden_size=8, intermediate_size=8,
                      num_layers=1024, num_heads=2, num_kv_heads=2, head_dim=4)
    with pytest.raises(CheckpointMismatchError) as e:
        plan_load(cfg, name_map_for(cfg), {})
    per_layer = 9  # 2 norms, q, k, v, o, gate, up, down
    n = 1024 * per_layer + 3  # + embed, final norm, lm_head
    msg = str(e.value)
    assert f"missing tensors ({n})" in msg and f"... and {n - 30} more" in msg
    assert len(e.value.missing) == 30


# ------------------------------------------------------------------------------ centers trust


def test_trusting_unverified_centers_is_explicit(tmp_path, centers):
    d = _centers_dir(tmp_path, centers)
    (d / "meta.json").unlink()
    c = load_centers(d, allow_unverified=True)
    np.testing.assert_array_equal(c.harmless, centers.harmless)
    one_line_error(cli("generate", "--model", BOGUS_MODEL, "--centers", str(d), "hi"),
                   str(d), "--trust-centers")
    # with the flag the centers pass and the run goes on to the model (which does not exist)
    r = cli("generate", "--model", BOGUS_MODEL, "--centers", str(d), "--trust-centers", "hi")
    assert r.returncode == 1 and "centers" not in r.stderr.splitlines()[-1]


def test_legacy_centers_without_the_new_fields_still_load(tmp_path, centers):
    """Centers written before format 2 (no artifact.json) lack tau & co: they load and those
    fields are not compared (documented in sri_jax.sri.centers)."""
    d = _centers_dir(tmp_path, centers)
    (d / "artifact.json").unlink()
    _edit_json(d / "meta.json", lambda m: {k: v for k, v in m.items()
                                           if k not in ("tau", "eps", "judge", "system_prompt",
                                                        "chat_template_hash")})
    load_centers(d)


def test_guard_binds_to_the_center_arrays(centers):
    rng = np.random.default_rng(1)
    traces = rng.uniform(size=(30, CFG.steps))
    from sri_jax.detector import CentersMismatchError

    by_dict = SRIGuard(epochs=2).fit(traces, centers_meta=dict(centers.meta))
    with pytest.raises(CentersMismatchError, match="fitted without center arrays"):
        by_dict.check_centers(centers)
    by_dict.check_centers(centers, allow_unverified=True)
    bound = SRIGuard(epochs=2).fit(traces, centers_meta=centers)
    same_meta_other_arrays = Centers(np.asarray(centers.harmless)[::-1],
                                     centers.harmful, dict(centers.meta))
    with pytest.raises(CentersMismatchError, match="center arrays differ"):
        bound.check_centers(same_meta_other_arrays)


# ------------------------------------------------------------------------------ sigma fields


def test_calibrated_centers_record_everything_that_changes_sigma(model, centers):
    m = centers.meta
    assert set(SIGMA_KEYS) <= set(m)
    want_template = hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest()[:16]
    assert (m["tau"], m["eps"], m["layer"], m["pooling"]) == (0.1, 1e-8, "last", "all")
    assert (m["steps"], m["gen_length"], m["block_length"]) == (4, 4, 4)
    assert m["system_prompt"] == "You are a helpful assistant"
    assert m["chat_template_hash"] == want_template
    assert m["judge"].endswith("parity_judge") and m["weight_hash"] == "h3"


def test_each_differing_sigma_field_is_named(model, centers):
    other = dataclasses.replace(model, system_prompt="You are a pirate",
                                chat_template=CHAT_TEMPLATE.replace("<|im_end|> ", "<|im_end|>"))
    with pytest.raises(ValueError) as e:
        check_compatible(centers, other, CFG.replace(tau=0.25))
    msg = str(e.value)
    for field in ("tau: centers 0.1 vs run 0.25", "system_prompt: centers 'You are a helpful "
                  "assistant' vs run 'You are a pirate'", "chat_template_hash: centers"):
        assert field in msg, msg
    with pytest.raises(ValueError, match="system_prompt: centers"):
        generate(model, ["write a poem"], CFG, centers=centers,
                 prompting=Prompting(system_prompt=None))


def test_guard_tau_check_fires(centers, guard):
    from sri_jax.detector import CentersMismatchError

    guard.check_centers(centers, tau=0.1)
    with pytest.raises(CentersMismatchError, match=r"tau: detector 0.1 vs run 0.2"):
        guard.check_centers(centers, tau=0.2)
    relabelled = Centers(centers.harmless, centers.harmful, {**centers.meta, "tau": 0.3})
    with pytest.raises(CentersMismatchError, match=r"tau: centers 0.3 vs detector 0.1"):
        guard.check_centers(relabelled)


def test_shipped_centers_and_guard_record_the_demo_settings():
    """The values added in place to the shipped metadata (arrays untouched): the demo's
    sampler (AR, 32 tokens), tau 0.1, eps 1e-8, the keyword judge, the default system prompt;
    the guard records the same and still binds to the arrays."""
    c = load_centers(SHIPPED / "centers")
    m = c.meta
    assert (m["tau"], m["eps"], m["gen_length"], m["block_length"], m["steps"]) == \
        (0.1, 1e-8, 32, 32, 32)
    assert m["sampler"]["mode"] == "autoregressive" and m["sampler"]["temperature"] == 0.0
    assert m["judge"].startswith("sri_jax.sri.judge.is_refusal@")
    assert m["system_prompt"] == "You are a helpful assistant"
    g = SRIGuard.load(SHIPPED / "guard", centers=c)
    assert g.centers_meta["tau"] == 0.1
    assert not math.isnan(g.threshold_)
