"""Meshes and shardings (sri_jax.parallel) on 8 fake CPU devices.

The 8-device runs happen in ONE child process (``XLA_FLAGS`` must be set before JAX starts, and
the rest of the suite runs on the default single CPU device): this file is also the child's
script (``python tests/test_parallel.py OUT.json``). The child runs every case and writes a
JSON report; the tests below assert on it. The oracle is the single-device run of the same
sampler on the same weights in the same child (itself checked against plain Python loops in
test_sampling.py, test_fast_diffusion.py and test_fast_dream.py): tokens must be identical,
phi within tests/tolerance.py's FP32_REL of its scale and sigma within SIGMA_ATOL. Covered:
the exact diffusion and AR samplers on four meshes, and every cached / threshold mode
(FAST_MODES, LLaDA and Dream) on two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tolerance import FP32_REL, SIGMA_ATOL

HERE = Path(__file__).resolve().parent
MESHES = ("8x1", "4x2", "2x4", "1x8")
KV_MESHES = ("2x4",)  # KV heads split over model (1x8, where they are not, is a fallback)
KINDS = ("diffusion", "autoregressive")
# Cached / threshold decoding (sampling/fast_diffusion.py), each mode on a data-only and a
# mixed mesh: name -> (model, SamplerConfig options). "dream": shifted logits (block-wise).
FAST_MESHES = ("8x1", "2x4")
FAST_SAMPLER = dict(steps=4, gen_length=8, block_length=4)  # two blocks of two steps
FAST_MODES = {"prefix": ("diffusion", dict(cache="prefix")),
              "dual": ("diffusion", dict(cache="dual")),
              "threshold": ("diffusion", dict(threshold=0.8)),
              "dual-threshold": ("diffusion", dict(cache="dual", threshold=0.8)),
              "dream-dual": ("dream", dict(cache="dual")),
              "dream-threshold": ("dream", dict(threshold=0.8))}
# Fast XLA:CPU compilation (the child compiles ~30 small programs; numbers do not change
# between the single-device oracle and the sharded runs, which share these flags).
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def child_env(n_devices: int, cache_dir=None) -> dict:
    """Environment of a child process with ``n_devices`` fake CPU devices. ``cache_dir``:
    JAX's persistent compilation cache (lets a later lowering, or a restarted process,
    reuse a program compiled earlier instead of compiling it again)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices} {FAST_XLA}"
    env["JAX_PLATFORMS"] = "cpu"
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


# ----------------------------------------------------------------------------- tiny models

D = 64


def model_configs():
    from sri_jax.models.config import ModelConfig

    diff = ModelConfig(family="llada", vocab_size=96, hidden_size=D, intermediate_size=128,
                       num_layers=2, num_heads=8, num_kv_heads=8, head_dim=8, causal=False,
                       mask_token_id=95, eos_token_id=1, eot_token_id=2, pad_token_id=1,
                       rope_theta=500000.0, rope_fp32_apply=True)
    # 4 KV heads: on the 1x8 mesh they cannot be split (fallback: replicated).
    ar = ModelConfig(family="llama", vocab_size=96, hidden_size=D, intermediate_size=128,
                     num_layers=2, num_heads=8, num_kv_heads=4, head_dim=8, eos_token_id=1,
                     pad_token_id=0)
    dream = diff.replace(family="dream", attention_bias=True, logits_shift=True,
                         rope_fp32_apply=False, rope_theta=1e6)
    return {"diffusion": diff, "autoregressive": ar, "dream": dream}


def numpy_params(cfg, seed: int, std: float = 0.5) -> dict:
    """Random fp32 params from numpy (no per-parameter XLA compilations, unlike nnx init)."""
    import jax

    from sri_jax.models.decoder import param_shapes

    rng = np.random.default_rng(seed)
    shapes = param_shapes(cfg)

    def make(path, shape):
        name = str(getattr(path[-1], "key", path[-1]))
        if name.endswith("norm"):
            return np.ones(shape, np.float32)
        return (std * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(make, shapes, is_leaf=lambda x: isinstance(x, tuple))


def write_hf_dir(path: Path, model) -> Path:
    """Save a llama-family :class:`Model` as a Hugging Face checkpoint directory (config.json,
    model.safetensors with HF names and [out, in] weights, tokenizer files when present)."""
    from sri_jax.weights import save_safetensors

    cfg, p = model.config, model.params
    assert cfg.family == "llama" and not cfg.attention_bias
    path.mkdir(parents=True, exist_ok=True)
    hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
          "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
          "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
          "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_norm_eps,
          "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_position_embeddings,
          "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu",
          "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
          "bos_token_id": cfg.bos_token_id, "torch_dtype": "float32"}
    (path / "config.json").write_text(json.dumps(hf))
    t = {"model.embed_tokens.weight": np.asarray(p["embed"]),
         "model.norm.weight": np.asarray(p["final_norm"])}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = np.asarray(p["lm_head"]).T
    names = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
             "wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
             "wo": "self_attn.o_proj", "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj",
             "w_down": "mlp.down_proj"}
    for k, hf_name in names.items():
        stacked = np.asarray(p["layers"][k])
        for i in range(cfg.num_layers):
            w = stacked[i]
            if k.endswith("norm"):
                t[f"model.layers.{i}.{hf_name}.weight"] = np.ascontiguousarray(w)
            else:
                t[f"model.layers.{i}.{hf_name}.weight"] = np.ascontiguousarray(w.T)
    save_safetensors(path / "model.safetensors", {k: np.asarray(v, np.float32)
                                                  for k, v in t.items()})
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path))
    return path


# ----------------------------------------------------------------------------- the child


def _compare(a, b):  # pragma: no cover - runs in the 8-device subprocess
    """A sharded run ``a`` against the single-device run ``b``."""
    out = {"tokens_equal": bool(np.array_equal(a.tokens, b.tokens)),
           "rows": int(a.tokens.shape[0])}  # the sharded run's rows: padding stripped
    for f in ("sri", "activations", "projections"):
        x, y = getattr(a, f), getattr(b, f)
        # sigma in (0, 1): absolute; activations / projections: relative to their scale
        scale = 1.0 if f == "sri" or x is None else float(np.max(np.abs(y)))
        out[f] = None if x is None else float(np.max(np.abs(x - y))) / scale
    if b.snapshots is not None:
        out["snapshots_equal"] = bool(np.array_equal(a.snapshots, b.snapshots))
    return out


def _fast_runs(report, tick, ids, mask):  # pragma: no cover - in the 8-device subprocess
    """Every cached / threshold mode on FAST_MESHES against its single-device run. The
    heads are scaled x3 (sharper logits) so that with threshold 0.8 steps commit one to
    four tokens and rows finish their blocks at different steps (a row that is done idles
    while the others decode: per-row state in a while loop over a data-sharded batch)."""
    import jax

    from sri_jax import make_mesh
    from sri_jax.models.model import Model
    from sri_jax.parallel import shard_model
    from sri_jax.sampling import Readout, SamplerConfig, generate
    from sri_jax.sri import Centers

    cfgs, rng = model_configs(), np.random.default_rng(0)
    steps = FAST_SAMPLER["steps"]
    centers = Centers(rng.normal(size=(steps, D)).astype(np.float32),
                      rng.normal(size=(steps, D)).astype(np.float32))
    readout = Readout(activations=True, snapshots=True,
                      direction=rng.normal(size=D).astype(np.float32))
    models = {}
    for seed, kind in enumerate(("diffusion", "dream"), start=1):
        params = numpy_params(cfgs[kind], seed=seed)
        params["lm_head"] = 3 * params["lm_head"]
        models[kind] = Model(cfgs[kind], jax.tree.map(jax.numpy.asarray, params))
    meshes = {s: make_mesh(*map(int, s.split("x"))) for s in FAST_MESHES}
    sharded = {(k, s): shard_model(m, meshes[s]) for k, m in models.items() for s in meshes}
    for name, (kind, opts) in FAST_MODES.items():
        kw = dict(input_ids=ids, attention_mask=mask, centers=centers, readout=readout,
                  cfg=SamplerConfig(**FAST_SAMPLER, **opts))
        ref = generate(models[kind], **kw)
        # response tokens committed at each SRI grid point; one token a step would give
        # exactly (t + 1) G / T: more means a step committed several (parallel decoding)
        committed = (ref.snapshots != cfgs[kind].mask_token_id).sum(-1)
        report["fast"][name] = {"committed": committed.tolist()}
        for shape in FAST_MESHES:
            report["fast"][name][shape] = _compare(generate(sharded[kind, shape], **kw), ref)
        tick(f"fast {name}")


def _child(out_path: str):  # pragma: no cover - runs in the 8-device subprocess
    import re
    import warnings

    import jax

    from sri_jax import load_model, make_mesh
    from sri_jax.models.model import Model
    from sri_jax.parallel import (describe_shardings, kv_cache_spec, param_specs,
                                  sampler_inputs, shard_model)
    from sri_jax.sampling import Readout, SamplerConfig, generate
    from sri_jax.sampling.api import Program, _sample
    from sri_jax.sampling.batching import batch_inputs
    from sri_jax.sampling.common import Probe, Reads
    from sri_jax.sri import Centers

    assert jax.device_count() == 8, jax.devices()
    t_start = time.perf_counter()
    ids = np.array([[5, 6, 7, 8, 9, 10], [1, 1, 1, 11, 12, 13], [1, 14, 15, 16, 17, 18]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    samplers = {"diffusion": SamplerConfig(steps=4, gen_length=8, block_length=4),
                "autoregressive": SamplerConfig.autoregressive(gen_length=6)}
    cfgs = model_configs()
    report = {"runs": {}, "shardings": {}, "kv_cache": {}, "sampled": {}, "fast": {},
              "devices": 8, "timings": []}

    def tick(label):
        report["timings"].append((label, round(time.perf_counter() - t_start, 2)))

    warnings.simplefilter("ignore")  # the 1x8 fallback warning is expected

    for kind in KINDS:
        mcfg, scfg = cfgs[kind], samplers[kind]
        model = Model(mcfg, jax.tree.map(jax.numpy.asarray, numpy_params(mcfg, seed=1)),
                      name=f"tiny-{kind}")
        rng = np.random.default_rng(0)
        centers = Centers(rng.normal(size=(scfg.steps, D)).astype(np.float32),
                          rng.normal(size=(scfg.steps, D)).astype(np.float32))
        direction = rng.normal(size=D).astype(np.float32)
        kw = dict(input_ids=ids, attention_mask=mask, cfg=scfg, centers=centers,
                  readout=Readout(activations=True, direction=direction))
        ref = generate(model, **kw)
        tick(f"{kind} ref")
        for shape in MESHES:
            d, m = map(int, shape.split("x"))
            mesh = make_mesh(data=d, model=m)
            sm = shard_model(model, mesh)
            res = generate(sm, **kw)
            report["runs"][f"{kind}-{shape}"] = _compare(res, ref)
            tick(f"{kind} {shape}")
            specs = param_specs(mcfg, mesh)
            rows = describe_shardings(sm.params)
            flat = {}
            for name, gshape, spec, shard in rows:
                leaf = sm.params
                for k in name.split("/"):
                    leaf = leaf[k]
                want = specs
                for k in name.split("/"):
                    want = want[k]
                flat[name] = {"shape": list(gshape), "shard": list(shard), "spec": spec,
                              "spec_ok": leaf.sharding.spec == want,
                              "n_devices": len(leaf.sharding.device_set),
                              "addressable": [list(s.data.shape)
                                              for s in leaf.addressable_shards][:1]}
            report["shardings"][f"{kind}-{shape}"] = flat
            if kind == "autoregressive" and shape in KV_MESHES:
                # Lower the program generate() just ran (same inputs, so XLA's compilation
                # cache answers) and read the KV cache's per-device shape in its partitioned
                # HLO: [N, B/data, S, K/model, hd].
                limit = mcfg.max_position_embeddings - scfg.gen_length
                pids, pmask = batch_inputs(list(ids), mcfg.pad_token_id, limit,
                                           masks=list(mask))
                r = direction / np.linalg.norm(direction)
                probe = Probe(*centers.device_arrays(), jax.numpy.asarray(r))
                a = sampler_inputs(mesh, pids, pmask, 0, probe)
                txt = _sample.lower(sm.params, *a, program=Program(
                    mcfg, scfg, Reads(activations=True))).compile().as_text()
                s_len = pids.shape[1] + scfg.gen_length
                pat = r"f32\[%d,(\d+),%d,(\d+),%d\]" % (mcfg.num_layers, s_len, mcfg.head_dim)
                report["kv_cache"][shape] = {
                    "per_device": sorted({(int(b), int(k)) for b, k in re.findall(pat, txt)}),
                    "spec": str(kv_cache_spec(mcfg, mesh))}
                tick(f"kv {shape}")
            if os.environ.get("SRI_JAX_TEST_SAMPLED") and shape == "2x4":
                # temperature > 0 (opt-in, two more compilations): threefry is partitionable,
                # so Gumbel / categorical draws over sharded logits are the same
                skw = dict(kw, cfg=scfg.replace(temperature=0.8), seed=7)
                report["sampled"][kind] = _compare(generate(sm, **skw), generate(model, **skw))
                tick(f"sampled {kind}")

    _fast_runs(report, tick, ids, mask)

    # Checkpoint loading straight into shards: HF directory and (dequantised) GGUF.
    import tempfile

    ar = Model(cfgs["autoregressive"], numpy_params(cfgs["autoregressive"], seed=3, std=0.02),
               name="tiny")
    with tempfile.TemporaryDirectory() as tmp:
        d = write_hf_dir(Path(tmp) / "hf", ar)
        mesh = make_mesh(data=2, model=4)
        plain = load_model(str(d), dtype="float32")
        import sri_jax.weights.hf as hf

        reads = []  # (param shape, block shape) of every read from the checkpoint
        real_call = hf.ParamReader.__call__

        def logged(self, index=()):
            out = real_call(self, index)
            reads.append(("/".join(self.path), list(self.shape), list(out.shape)))
            return out

        hf.ParamReader.__call__ = logged
        try:
            sharded = load_model(str(d), dtype="float32", mesh=mesh)
        finally:
            hf.ParamReader.__call__ = real_call
        specs = param_specs(sharded.config, mesh)
        ok = jax.tree.map(lambda x, s: bool(x.sharding.spec == s and x.sharding.mesh == mesh),
                          sharded.params, specs)
        eq = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))),
                          sharded.params, plain.params)
        report["hf_load"] = {"specs_ok": all(jax.tree.leaves(ok)),
                             "values_equal": all(jax.tree.leaves(eq)),
                             "wq_shard": list(sharded.params["layers"]["wq"]
                                              .addressable_shards[0].data.shape),
                             "reads": reads,
                             "split": [["/".join(k.key for k in kp), list(x.shape),
                                        any(a is not None for a in s)]
                                       for (kp, x), s in zip(
                                           jax.tree_util.tree_leaves_with_path(sharded.params),
                                           jax.tree.leaves(specs, is_leaf=lambda v: isinstance(
                                               v, jax.sharding.PartitionSpec)))]}

        import sri_jax.weights.gguf_io as gguf_io

        g = Path(tmp) / "tiny.gguf"
        g.write_bytes(b"GGUF")
        real = gguf_io.load_gguf
        gguf_io.load_gguf = lambda *a, **k: (ar.config, ar.params, None, "h", None)
        try:
            gm = load_model(str(g), dtype="float32", mesh=mesh)
        finally:
            gguf_io.load_gguf = real
        report["gguf_load"] = {
            "specs_ok": all(jax.tree.leaves(jax.tree.map(
                lambda x, s: bool(x.sharding.spec == s), gm.params, specs))),
            "values_equal": all(jax.tree.leaves(jax.tree.map(
                lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))),
                gm.params, ar.params)))}
    report["seconds"] = time.perf_counter() - t_start
    Path(out_path).write_text(json.dumps(report))


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    out = tmp / "report.json"
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out)],
                       env=child_env(8, tmp / "jax-cache"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"8-device child failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("shape", MESHES)
@pytest.mark.parametrize("kind", KINDS)
def test_mesh_gives_single_device_results(report, kind, shape):
    r = report["runs"][f"{kind}-{shape}"]
    assert r["rows"] == 3  # batch of 3 padded to the data axis, padding stripped
    assert r["tokens_equal"], r
    assert r["sri"] < SIGMA_ATOL, r  # tests/tolerance.py
    assert r["activations"] < FP32_REL and r["projections"] < FP32_REL, r


@pytest.mark.parametrize("shape", FAST_MESHES)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_fast_decoding_on_a_mesh_gives_single_device_results(report, mode, shape):
    """Prefix / dual cache and threshold decoding, LLaDA and Dream (block-wise): the sharded
    run reproduces the single-device one (itself checked against plain loops in
    test_fast_diffusion.py / test_fast_dream.py), the per-step snapshots included."""
    r = report["fast"][mode][shape]
    assert r["rows"] == 3  # batch of 3 padded to the data axis, padding stripped
    assert r["tokens_equal"] and r["snapshots_equal"], r
    assert r["sri"] < SIGMA_ATOL, r  # tests/tolerance.py
    assert r["activations"] < FP32_REL and r["projections"] < FP32_REL, r


@pytest.mark.parametrize("mode", [m for m, (_, o) in FAST_MODES.items() if "threshold" in o])
def test_threshold_cases_commit_several_tokens_a_step(report, mode):
    """The threshold cases above are not one-token-a-step runs: some step commits several
    tokens (more than (t + 1) G / T committed at a grid point t) and the rows progress
    differently (a row whose block is done idles while the others decode)."""
    committed = np.array(report["fast"][mode]["committed"])  # [rows, T]
    t, g = FAST_SAMPLER["steps"], FAST_SAMPLER["gen_length"]
    one_a_step = np.arange(1, t + 1) * g // t
    assert (committed > one_a_step).any(), committed
    assert len({tuple(c) for c in committed}) > 1, committed


def test_sampling_at_temperature_matches_single_device(report):
    """Opt-in (SRI_JAX_TEST_SAMPLED=1): costs two extra compilations per sampler kind."""
    if not report["sampled"]:
        pytest.skip("set SRI_JAX_TEST_SAMPLED=1 to also compare sampling at temperature 0.8")
    for r in report["sampled"].values():
        assert r["tokens_equal"] and r["sri"] < SIGMA_ATOL, r


@pytest.mark.parametrize("shape", MESHES)
def test_parameters_are_really_sharded(report, shape):
    d, m = map(int, shape.split("x"))
    cfgs = model_configs()
    for kind in KINDS:
        cfg = cfgs[kind]
        s = report["shardings"][f"{kind}-{shape}"]
        assert all(v["spec_ok"] and v["n_devices"] == 8 for v in s.values()), s
        n, hd, f = cfg.num_layers, cfg.head_dim, cfg.intermediate_size
        q = cfg.num_heads * hd
        kv = cfg.num_kv_heads * hd
        kv_split = cfg.num_kv_heads % m == 0
        want = {"layers/wq": [n, D, q // m], "layers/wo": [n, q // m, D],
                "layers/wk": [n, D, kv // m if kv_split else kv],
                "layers/wv": [n, D, kv // m if kv_split else kv],
                "layers/w_gate": [n, D, f // m], "layers/w_up": [n, D, f // m],
                "layers/w_down": [n, f // m, D], "embed": [96 // m, D],
                "lm_head": [D, 96 // m], "layers/attn_norm": [n, D], "final_norm": [D]}
        for name, shard in want.items():
            assert s[name]["shard"] == shard, (kind, name, s[name])
            assert s[name]["addressable"][0] == shard, (kind, name, s[name])
        # no FSDP: nothing is split over the data axis
        assert not any("data" in v["spec"] for v in s.values())


@pytest.mark.parametrize("shape", KV_MESHES)
def test_kv_cache_follows_batch_and_kv_heads(report, shape):
    """The cache [N, B, S, K, hd] inside the compiled AR sampler (per-device shapes in the
    partitioned HLO): batch over data, KV heads over model. When K does not divide the
    model axis GSPMD still splits K over a divisor of it (partially replicated)."""
    d, m = map(int, shape.split("x"))
    k = model_configs()["autoregressive"].num_kv_heads
    rows = -(-3 // d) * d  # batch 3 padded to the data axis
    [(b, k_dev)] = report["kv_cache"][shape]["per_device"]
    assert b == rows // d
    if k % m == 0:
        assert k_dev == k // m
    else:
        assert k % k_dev == 0 and k_dev < k


def test_checkpoints_load_straight_into_shards(report):
    h = report["hf_load"]
    assert h["specs_ok"] and h["values_equal"], h
    assert h["wq_shard"] == [2, D, 8 * 8 // 4]
    # slice-level reads: a split parameter is never read whole, only the distinct blocks of
    # its shards (each once); a replicated one is read once, not once per device
    reads = {}
    for name, _, block in h["reads"]:
        reads.setdefault(name, []).append(block)
    assert len(reads) == len(h["split"])
    for name, full, is_split in h["split"]:
        blocks = reads[name]
        if is_split:
            assert all(b != full for b in blocks), (full, blocks)
            assert sum(np.prod(b) for b in blocks) == np.prod(full), (full, blocks)
        else:
            assert blocks == [full], (full, blocks)
    g = report["gguf_load"]
    assert g["specs_ok"] and g["values_equal"], g


# ----------------------------------------------------------------------------- in-process


def test_mesh_shape_resolution_and_errors():
    from sri_jax.parallel import make_mesh, resolve_mesh_shape

    assert resolve_mesh_shape(8) == (8, 1)
    assert resolve_mesh_shape(8, -1, 2) == (4, 2)
    assert resolve_mesh_shape(8, 2, -1) == (2, 4)
    assert resolve_mesh_shape(32, 8, 4) == (8, 4)
    for bad, msg in [((8, 3, -1), "does not divide"), ((8, -1, 3), "does not divide"),
                     ((8, 4, 4), "must equal"), ((8, -1, -1), "at most one"),
                     ((8, 0, 1), "positive")]:
        with pytest.raises(ValueError, match=msg):
            resolve_mesh_shape(*bad)
    mesh = make_mesh()  # the suite's single CPU device
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match="must equal"):
        make_mesh(data=2, model=2)


def test_param_specs_for_published_8b_models():
    from jax.sharding import PartitionSpec as P

    from sri_jax.models.config import LLADA_8B
    from sri_jax.parallel import kv_cache_spec, param_specs, sharding_fallbacks

    s = param_specs(LLADA_8B, 8)
    assert s["embed"] == P("model", None) and s["lm_head"] == P(None, "model")
    assert s["layers"]["wq"] == P(None, None, "model")
    assert s["layers"]["wo"] == P(None, "model", None)
    assert s["layers"]["w_down"] == P(None, "model", None)
    assert s["layers"]["attn_norm"] == P(None, None)
    assert sharding_fallbacks(LLADA_8B, 8) == []
    # Llama-3.1-8B: 8 KV heads -> a model axis of 16 must replicate wk/wv (and say so)
    llama = LLADA_8B.replace(family="llama", causal=True, num_kv_heads=8, vocab_size=128256,
                             intermediate_size=14336, mask_token_id=None)
    s16 = param_specs(llama, 16)
    assert s16["layers"]["wk"] == P(None, None, None) and s16["layers"]["wq"] \
        == P(None, None, "model")
    assert any("num_kv_heads" in f for f in sharding_fallbacks(llama, 16))
    assert kv_cache_spec(llama, 8) == P(None, "data", None, "model", None)
    assert kv_cache_spec(llama, 16) == P(None, "data", None, None, None)
    # vocab that does not divide: split the hidden dim instead; tied head has no lm_head
    odd = llama.replace(vocab_size=100003, tie_word_embeddings=True)
    so = param_specs(odd, 8)
    assert so["embed"] == P(None, "model") and "lm_head" not in so
    assert param_specs(llama, 1)["layers"]["wq"] == P(None, None, None)


def test_trace_store_on_fsspec_url():
    from sri_jax.parallel import TraceStore

    st = TraceStore(f"memory://sri-jax-test-{os.getpid()}/run")
    st.mkdir()
    st.write_bytes("shard-00001.parquet", b"x")
    st.write_bytes("plan.json", b"{}")
    assert st.list("shard-*.parquet") == ["shard-00001.parquet"]
    assert st.exists("plan.json") and st.read_text("plan.json") == "{}"
    assert not st.exists("manifest.json")


if __name__ == "__main__":  # the 8-device child
    sys.path.insert(0, str(HERE))
    _child(sys.argv[1])
