"""Checkpoint directory loading: configs, the real LLaDA release format, and clear errors.

No forward passes here (numerics are in test_parity_hf.py); params are compared directly
with the stored tensors, so the file stays fast.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
import torch

import checkpoint_writers as cw
from sri_jax.models.config import LLADA_8B, SMOLLM2_135M, RopeScaling
from sri_jax.models.decoder import param_shapes
from sri_jax.weights import (CheckpointMismatchError, SafetensorsError, SafetensorsFile,
                             config_from_hf, load_hf_dir, load_hf_model, read_safetensors,
                             save_safetensors, weight_hash)
from sri_jax.weights.name_maps import LLADA_MAP, TensorSource, param_paths, plan_load

REAL = cw.LLADA_FORMAT_DIR


def _json(p):
    return json.loads(Path(p).read_text())


def _np(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# ----------------------------------------------------------------------------- real LLaDA


def test_real_llada_metadata_gives_published_config():
    cfg = config_from_hf(_json(REAL / "config.json"),
                         generation_config=_json(REAL / "generation_config.json"),
                         tokenizer_config=_json(REAL / "tokenizer_config.json"))
    assert cfg == LLADA_8B
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.intermediate_size, cfg.vocab_size) == (4096, 32, 32, 32, 128, 12288, 126464)
    assert (cfg.mask_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id,
            cfg.eot_token_id) == (126336, 126080, 126081, 126081, 126348)
    assert not cfg.causal and cfg.rope_fp32_apply and not cfg.tie_word_embeddings
    assert cfg.rope_theta == 500000.0 and cfg.rms_norm_eps == 1e-5
    # the config alone (no generation/tokenizer config) falls back to the REFERENCE ids
    assert config_from_hf(_json(REAL / "config.json")) == LLADA_8B


def test_real_llada_index_matches_name_map_and_total_size():
    """Every name in the release's weight_map maps onto our params (nothing missing or
    unknown) with the published [out, in] shapes, and the bf16 byte count is the index's
    metadata.total_size."""
    index = _json(REAL / "model.safetensors.index.json")
    cfg = config_from_hf(_json(REAL / "config.json"))
    d, f, v = 4096, 12288, 126464
    published = {"wte": (v, d), "ff_out": (v, d), "ln_f": (d,), "attn_norm": (d,),
                 "ff_norm": (d,), "q_proj": (d, d), "k_proj": (d, d), "v_proj": (d, d),
                 "attn_out": (d, d), "ff_proj": (f, d), "up_proj": (f, d),
                 "block_ff_out": (d, f)}
    tensors = {}
    for name, shard in index["weight_map"].items():
        part = name.split(".")[-2]
        if ".blocks." in name and part == "ff_out":
            part = "block_ff_out"
        tensors[name] = TensorSource(name, shard, "BF16", published[part])
    plan = plan_load(cfg, LLADA_MAP, tensors)
    assert plan.tied_head is None and not plan.ignored
    assert sum(len(v) for v in plan.entries.values()) == len(index["weight_map"]) == 291
    n_params = sum(int(np.prod(s)) for s in param_paths(param_shapes(cfg)).values())
    assert 2 * n_params == index["metadata"]["total_size"] == 16031162368


# ----------------------------------------------------------------------------- scaled LLaDA


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    return cw.write_llada_dir(tmp_path_factory.mktemp("llada"), n_shards=3)


def test_scaled_llada_dir_loads_with_real_names_and_index(llada_dir):
    ck = llada_dir
    index = _json(ck.path / "model.safetensors.index.json")
    assert set(index) == {"metadata", "weight_map"}
    assert len(set(index["weight_map"].values())) == 3
    res = load_hf_dir(ck.path, dtype="bfloat16")
    cfg = res.config
    assert cfg.family == "llada" and not cfg.causal
    assert (cfg.hidden_size, cfg.num_layers, cfg.vocab_size) == (64, 2, 512)
    assert cfg.mask_token_id == ck.extra["mask_token_id"] == 512 - 13
    assert cfg.bos_token_id == ck.extra["bos_token_id"] == 512 - 269
    assert cfg.eos_token_id == cfg.pad_token_id == ck.extra["eos_token_id"]
    assert cfg.eot_token_id == ck.extra["eot_token_id"] == 511
    assert res.tokenizer is None  # no tokenizer.json: the chat template still comes through
    assert res.chat_template == _json(REAL / "tokenizer_config.json")["chat_template"]
    assert len(res.weight_hash) == 64
    stored = ck.extra["llada_state"]
    p = res.params
    assert p["embed"].dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(p["embed"]),
                                  _np(stored["model.transformer.wte.weight"]))
    np.testing.assert_array_equal(np.asarray(p["lm_head"]),
                                  _np(stored["model.transformer.ff_out.weight"]).T)
    for i in range(2):
        b = f"model.transformer.blocks.{i}."
        for ours, theirs, t in [("wq", "q_proj", True), ("wo", "attn_out", True),
                                ("w_gate", "ff_proj", True), ("w_up", "up_proj", True),
                                ("w_down", "ff_out", True), ("attn_norm", "attn_norm", False),
                                ("mlp_norm", "ff_norm", False)]:
            want = _np(stored[b + theirs + ".weight"])
            np.testing.assert_array_equal(np.asarray(p["layers"][ours][i]),
                                          want.T if t else want)


def test_missing_shard_is_named_before_reading(llada_dir, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(llada_dir.path, d)
    (d / "model-00002-of-00003.safetensors").unlink()
    (d / "model-00003-of-00003.safetensors").write_bytes(b"garbage")  # must not be read
    with pytest.raises(FileNotFoundError) as e:
        load_hf_dir(d)
    msg = str(e.value)
    assert "model-00002-of-00003.safetensors" in msg and "missing" in msg
    assert "model-00003" not in msg and "Download" in msg


def test_all_mismatches_reported_at_once(llada_dir, tmp_path):
    """A wrong-shaped tensor, a missing tensor and an unexpected tensor in different shards
    come back in ONE error that names each file and says how to fix it."""
    d = tmp_path / "ck"
    shutil.copytree(llada_dir.path, d)
    index = _json(d / "model.safetensors.index.json")
    wm = index["weight_map"]
    shape_name = "model.transformer.blocks.0.q_proj.weight"
    miss_name = "model.transformer.blocks.1.up_proj.weight"
    extra_name = "model.transformer.blocks.1.mystery.weight"
    f_shape, f_miss = wm[shape_name], wm[miss_name]
    t = read_safetensors(d / f_shape)
    t[shape_name] = np.zeros((64, 32), ml_dtypes.bfloat16)
    save_safetensors(d / f_shape, t)
    t = read_safetensors(d / f_miss)
    del t[miss_name]
    t[extra_name] = np.zeros((4,), ml_dtypes.bfloat16)
    save_safetensors(d / f_miss, t)
    del wm[miss_name]
    wm[extra_name] = f_miss
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointMismatchError) as e:
        load_hf_dir(d)
    err, msg = e.value, str(e.value)
    assert "3 problem(s)" in msg
    assert shape_name in msg and "stored [64, 32], config expects [64, 64]" in msg
    assert miss_name in msg and "missing tensors" in msg
    assert extra_name in msg and "unexpected tensors" in msg
    assert f_shape in msg and f_miss in msg
    assert msg.count("fix:") == 3
    assert len(err.wrong_shape) == len(err.missing) == len(err.unexpected) == 1


def test_index_listing_a_tensor_its_shard_lacks(llada_dir, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(llada_dir.path, d)
    index = _json(d / "model.safetensors.index.json")
    name = "model.transformer.ln_f.weight"
    other = next(f for f in sorted(set(index["weight_map"].values()))
                 if f != index["weight_map"][name])
    index["weight_map"][name] = other
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="does not contain it") as e:
        load_hf_dir(d)
    assert name in str(e.value) and other in str(e.value)


def test_truncated_and_garbage_safetensors(llada_dir, tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(llada_dir.path, d)
    shard = d / "model-00001-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])  # data section cut short
    with pytest.raises(SafetensorsError) as e:
        load_hf_dir(d)
    msg = str(e.value)
    assert shard.name in msg and "truncated" in msg and "incompletely downloaded" in msg
    shard.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(SafetensorsError, match="incompletely downloaded") as e:
        SafetensorsFile(shard)
    assert str(shard) in str(e.value)
    shard.write_bytes(data[:4])
    with pytest.raises(SafetensorsError, match="only 4 bytes"):
        SafetensorsFile(shard)
    shard.write_bytes((12).to_bytes(8, "little") + b"{not json!!}")
    with pytest.raises(SafetensorsError, match="does not parse"):
        SafetensorsFile(shard)


def test_pickle_only_dir_is_refused(tmp_path):
    (tmp_path / "config.json").write_text((REAL / "config.json").read_text())
    torch.save({"x": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError) as e:
        load_hf_dir(tmp_path)
    msg = str(e.value)
    assert "pytorch_model.bin" in msg and "never unpickles" in msg and "safetensors" in msg


def test_unknown_architecture(tmp_path):
    hf = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 64}
    with pytest.raises(ValueError) as e:
        config_from_hf(hf)
    msg = str(e.value)
    assert "mistral" in msg and "MistralForCausalLM" in msg
    for supported in ("llama", "qwen2", "llada", "Dream", "LlamaForCausalLM", "LLaDAModelLM"):
        assert supported in msg
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="unsupported model"):
        load_hf_dir(tmp_path)


# ----------------------------------------------------------------------------- configs


def test_config_from_hf_llama_variants():
    base = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
            "tie_word_embeddings": True, "vocab_size": 49152, "max_position_embeddings": 8192,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "rope_scaling": None,
            "hidden_act": "silu"}
    assert config_from_hf(base) == SMOLLM2_135M  # SmolLM2 is plain llama
    rs = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    want = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    v4 = dict(base, rope_scaling=dict(rs, rope_type="llama3"), rope_theta=500000.0)
    cfg = config_from_hf(v4)
    assert cfg.rope_scaling == want and cfg.rope_theta == 500000.0
    v4_old_key = dict(base, rope_scaling=dict(rs, type="llama3"))
    assert config_from_hf(v4_old_key).rope_scaling == want
    v5 = dict(base, rope_parameters=dict(rs, rope_type="llama3", rope_theta=500000.0))
    del v5["rope_theta"]
    cfg = config_from_hf(v5)
    assert cfg.rope_scaling == want and cfg.rope_theta == 500000.0
    assert config_from_hf(dict(base, head_dim=32)).head_dim == 32
    assert config_from_hf(base).head_dim == 64
    for bad in ({"rope_type": "yarn", "factor": 4.0}, {"type": "dynamic", "factor": 2.0}):
        with pytest.raises(NotImplementedError, match="not supported"):
            config_from_hf(dict(base, rope_scaling=bad))
    # linear (HF: every inverse frequency / factor; Gemma-3's global layers use it)
    lin = config_from_hf(dict(base, rope_scaling={"type": "linear", "factor": 2.0}))
    assert (lin.rope_scaling.rope_type, lin.rope_scaling.factor) == ("linear", 2.0)
    with pytest.raises(NotImplementedError, match="mlp_bias"):
        config_from_hf(dict(base, mlp_bias=True))
    # Llama-3.1 style eos list: first is eos, last the end-of-turn id
    cfg = config_from_hf(dict(base, eos_token_id=[128001, 128008, 128009], vocab_size=128256))
    assert (cfg.eos_token_id, cfg.eot_token_id) == (128001, 128009)


def test_config_from_hf_qwen2_and_dream():
    q = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
         "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
         "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": 152064,
         "tie_word_embeddings": False, "use_sliding_window": False, "eos_token_id": 151645}
    cfg = config_from_hf(q)
    assert cfg.family == "qwen2" and cfg.attention_bias and cfg.causal
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.rope_theta) == (128, 4, 1e6)
    assert config_from_hf(dict(q, tie_word_embeddings=True)).tie_word_embeddings
    dream = dict(q, model_type="Dream", architectures=["DreamModel"], mask_token_id=151666,
                 eos_token_id=151643, pad_token_id=151643)
    cfg = config_from_hf(dream)
    assert cfg.family == "dream" and not cfg.causal and cfg.attention_bias
    assert cfg.logits_shift and cfg.mask_token_id == 151666 and cfg.eos_token_id == 151643
    with pytest.raises(ValueError, match="mask_token_id"):
        config_from_hf(dict(dream, mask_token_id=10 ** 6))


# ----------------------------------------------------------------------------- HF dirs


def _assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


def test_sharded_index_loads_equal_to_single_file(tmp_path):
    one = cw.write_qwen2_dir(tmp_path / "one", seed=3)
    many = cw.write_qwen2_dir(tmp_path / "many", seed=3, max_shard_size="40KB")
    shards = sorted(p.name for p in many.path.glob("*.safetensors"))
    assert len(shards) >= 3 and (many.path / "model.safetensors.index.json").is_file()
    a = load_hf_dir(one.path, dtype="float32")
    b = load_hf_dir(many.path, dtype="float32")
    assert a.config == b.config
    _assert_trees_equal(a.params, b.params)
    wq = one.state_dict["model.layers.1.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(a.params["layers"]["wq"][1]), wq.T)
    np.testing.assert_array_equal(np.asarray(a.params["layers"]["bk"][0]),
                                  one.state_dict["model.layers.0.self_attn.k_proj.bias"])
    assert a.weight_hash != b.weight_hash  # different files


def test_dtypes_place_callback_and_hash(tmp_path):
    ck = cw.write_llama_dir(tmp_path / "l", tie=True)
    seen = []

    def place(path, read):
        arr = read()
        seen.append((path, arr.shape, arr.dtype))
        assert arr.shape == read.shape and arr.dtype == read.dtype
        if arr.ndim == 3:  # any block of a stacked parameter, straight from the file
            np.testing.assert_array_equal(read((slice(1, 2), slice(None, 3))), arr[1:2, :3])
        return jax.device_put(arr)

    res = load_hf_dir(ck.path, dtype="float16", place=place)
    assert {p for p, _, _ in seen} == {("embed",), ("final_norm",), ("layers", "attn_norm"),
                                      ("layers", "wq"), ("layers", "wk"), ("layers", "wv"),
                                      ("layers", "wo"), ("layers", "mlp_norm"),
                                      ("layers", "w_gate"), ("layers", "w_up"),
                                      ("layers", "w_down")}
    assert all(dt == np.float16 for _, _, dt in seen)
    assert "lm_head" not in res.params and res.config.tie_word_embeddings
    assert load_hf_dir(ck.path, dtype=jax.numpy.bfloat16).params["embed"].dtype == \
        jax.numpy.bfloat16
    with pytest.raises(ValueError, match="bfloat16"):
        load_hf_dir(ck.path, dtype="int8")
    # hash: stable, and sensitive to config and to bytes at the start of a weight file
    h = weight_hash(ck.path)
    assert h == res.weight_hash == weight_hash(ck.path)
    cfg = _json(ck.path / "config.json")
    (ck.path / "config.json").write_text(json.dumps(dict(cfg, eos_token_id=3)))
    assert weight_hash(ck.path) != h


def test_tied_checkpoint_with_stored_head(tmp_path):
    """A tied config ignores a stored lm_head.weight equal to the embedding silently, and one
    that differs with a warning (the config wins, as in transformers)."""
    ck = cw.write_llama_dir(tmp_path / "t", tie=True)
    f = ck.path / "model.safetensors"
    t = read_safetensors(f)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()
    save_safetensors(f, t, metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = load_hf_dir(ck.path, dtype="float32")
    assert "lm_head" not in res.params
    t["lm_head.weight"] = t["lm_head.weight"] + 1
    save_safetensors(f, t)
    with pytest.warns(UserWarning, match="differs"):
        load_hf_dir(ck.path, dtype="float32")
    # an untied config without a stored head reports the missing tensor and the fix
    del t["lm_head.weight"]
    save_safetensors(f, t)
    cfg = _json(ck.path / "config.json")
    (ck.path / "config.json").write_text(json.dumps(dict(cfg, tie_word_embeddings=False)))
    with pytest.raises(CheckpointMismatchError, match="lm_head.weight") as e:
        load_hf_dir(ck.path)
    assert "tie_word_embeddings" in str(e.value)


def test_tokenizer_and_chat_template_are_loaded(tmp_path):
    tmpl = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
    ck = cw.write_llama_dir(tmp_path / "tok", tokenizer_chat_template=tmpl)
    res = load_hf_dir(ck.path)
    assert res.tokenizer is not None and res.chat_template == tmpl
    assert res.tokenizer("w5 w9", add_special_tokens=False)["input_ids"] == [5, 9]
    assert load_hf_dir(ck.path, load_tokenizer=False).tokenizer is None
    model = load_hf_model(ck.path, name="tiny")
    assert model.weight_hash == res.weight_hash and model.chat_template == tmpl
    assert model.chat_prompt("hi") == "<system> You are a helpful assistant <user> hi <assistant>"


def test_blocked_transpose_fill_matches_numpy():
    """Large transposed views are copied in tiles (with a dtype cast); same result."""
    from sri_jax.weights.hf import _fill
    src = np.random.RandomState(0).randn(1500, 2100).astype(ml_dtypes.bfloat16)
    for dt in (ml_dtypes.bfloat16, np.float32):
        dst = np.empty((2, 2100, 1500), dt)
        _fill(dst[1], src.T)
        np.testing.assert_array_equal(dst[1], src.T.astype(dt))


def test_missing_dir_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_dir(tmp_path)


# ----------------------------------------------------------------------------- safetensors


def test_bf16_round_trip_matches_torch(tmp_path):
    from safetensors.torch import load_file, save_file
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(5, 7, generator=g).to(torch.bfloat16),
               "b": torch.randn(3, generator=g).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "d": torch.randn(2, 2, generator=g).to(torch.float16),
               "e": torch.tensor([True, False]),
               "f": torch.zeros(0, 4)}
    save_file(tensors, str(tmp_path / "torch.safetensors"), metadata={"format": "pt"})
    f = SafetensorsFile(tmp_path / "torch.safetensors")
    assert f.metadata == {"format": "pt"} and set(f.keys()) == set(tensors)
    ours = {k: f.get(k) for k in f.keys()}
    for k, t in tensors.items():
        assert ours[k].shape == tuple(t.shape)
        np.testing.assert_array_equal(ours[k], _np(t))
    assert ours["a"].dtype == np.dtype(ml_dtypes.bfloat16)
    # our writer -> torch's reader, bit for bit
    save_safetensors(tmp_path / "ours.safetensors", ours)
    back = load_file(str(tmp_path / "ours.safetensors"))
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype
        assert torch.equal(back[k], t)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_save_safetensors_all_dtypes_round_trip(tmp_path):
    arrs = {dt: (np.arange(6) % 2).astype(dt).reshape(2, 3)
            for dt in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "?")}
    arrs = {f"t_{k}": v for k, v in arrs.items()}
    arrs["big_endian"] = np.arange(4, dtype=">f4")
    arrs["scalar"] = np.array(3.5, np.float32)
    save_safetensors(tmp_path / "x.safetensors", arrs)
    back = read_safetensors(tmp_path / "x.safetensors")
    for k, v in arrs.items():
        assert back[k].dtype.kind == v.dtype.kind and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    with pytest.raises(TypeError, match="cannot be stored"):
        save_safetensors(tmp_path / "y.safetensors", {"c": np.zeros(2, np.complex64)})


# The released google/gemma-2-2b-it and google/gemma-3-1b-it config.json (transformers 4.x
# keys: no layer_types, Gemma-3's rope_local_base_freq and sliding_window_pattern).
GEMMA2_2B_IT = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": True, "vocab_size": 256000}
GEMMA3_1B_IT = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "initializer_range": 0.02,
    "intermediate_size": 6912, "max_position_embeddings": 32768, "model_type": "gemma3_text",
    "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144}


def test_config_from_hf_gemma_release_configs():
    """Defaults of the 4.x configs: Gemma-2 layers alternate sliding / full starting with
    sliding (HF: ``not layer_idx % 2``); Gemma-3 makes every 6th layer full; tied embeddings
    when the key is absent; the end-of-turn id is the last EOS."""
    from transformers import Gemma2Config, Gemma3TextConfig
    g2 = config_from_hf(GEMMA2_2B_IT)
    assert g2.family == "gemma2" and g2.tie_word_embeddings and not g2.qk_norm
    assert (g2.sliding_window, g2.attn_logit_softcap, g2.final_logit_softcap,
            g2.query_pre_attn_scalar) == (4096, 50.0, 30.0, 256.0)
    assert (g2.eos_token_id, g2.eot_token_id, g2.bos_token_id) == (1, 107, 2)
    hf2 = Gemma2Config(**{k: v for k, v in GEMMA2_2B_IT.items() if k != "architectures"})
    assert g2.layer_types == tuple(hf2.layer_types)
    g3 = config_from_hf(GEMMA3_1B_IT)
    assert g3.family == "gemma3" and g3.qk_norm and g3.tie_word_embeddings
    assert (g3.sliding_window, g3.rope_theta, g3.rope_local_theta, g3.rope_scaling) == \
        (512, 1e6, 1e4, None)
    assert (g3.attn_logit_softcap, g3.final_logit_softcap, g3.eot_token_id) == (None, None, 106)
    hf3 = Gemma3TextConfig(**{k: v for k, v in GEMMA3_1B_IT.items() if k != "architectures"})
    assert g3.layer_types == tuple(hf3.layer_types)
    assert g3.sliding_layers.count(False) == 4  # layers 5, 11, 17, 23
    # the 4B+ text towers: linear scaling of the global layers only
    g3s = config_from_hf(dict(GEMMA3_1B_IT, rope_scaling={"rope_type": "linear",
                                                          "factor": 8.0}))
    assert (g3s.rope_scaling.rope_type, g3s.rope_scaling.factor, g3s.rope_local_theta) == \
        ("linear", 8.0, 1e4)
    with pytest.raises(NotImplementedError, match="use_bidirectional_attention"):
        config_from_hf(dict(GEMMA3_1B_IT, use_bidirectional_attention=True))
    with pytest.raises(NotImplementedError, match="hidden_activation"):
        config_from_hf(dict(GEMMA2_2B_IT, hidden_activation="relu"))
