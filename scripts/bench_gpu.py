#!/usr/bin/env python
"""One-shot accelerator benchmark: sri_jax's fused samplers at 8B scale on one GPU, next to a
reference-style PyTorch/HF loop on the same GPU. Written to run ONCE on a lent H100 (80 GB)
within a hard ~8 minute limit, so every measurement is budgeted and saved as it completes.

Random bf16 weights only (no checkpoint files); random prompt ids and random centers.

1. versions and devices;
2. torch baseline (a subprocess, so its CUDA memory and libraries never meet JAX's): HF
   ``LlamaForCausalLM`` built on the device in bf16, one prompt at a time, a Python loop per
   step, hidden states to the host and sigma in numpy every step; no KV cache for AR (as the
   reference code); LLaDA ``generate`` for diffusion (``config.is_causal = False``). Per
   workload one full untimed warm-up trace (its own prompt: every sequence length the timed
   traces meet has run once), then ``--baseline-prompts`` (>= 8) timed traces; the baseline
   rate is 1 / the MEDIAN seconds per prompt. The child writes its weights with
   ``save_pretrained`` so that sri_jax loads the very same bf16 weights (``--no-check``: each
   side draws its own random weights and nothing is compared). Plus its bf16 matmul rate;
3. JAX bf16 matmul peak (8192^3, median) and HBM copy bandwidth;
4. diffusion: LLaDA-8B shape (``sri_jax.models.config.LLADA_8B``), reference sampler settings
   (REFERENCE.md section 1: gen 128, 32 steps, one block of 128), prompt 64, SRI on, batch
   1, 8, 32, 64; then SRI off at the largest batch measured;
5. AR: Llama-3.1-8B shape (``model_configs`` below), greedy, gen 32 (the reference's T;
   flag ``--ar-gen``), prompt 64, batch 1, 16, 64, 128; SRI off at the largest.

Agreement, in the same run (as ``bench_sampler.py`` on the CPU): sri_jax traces the baseline's
prompts with the same weights and centers (SRI on, one call, compile excluded) and the JSON
records per workload ``check``: rows whose tokens equal the baseline's, token agreement, and
the largest sigma difference on those rows (bf16 on both sides, so near-tied logits may
decide differently: a warning, not an error); and whether SRI on and off give the same tokens.

Per sri_jax run: compile time (JAX compile events of the first call), first-call wall (never
in the medians), median of 2 timed calls, prompts/s, tokens/s, model TFLOP/s (``bench_sampler.forward_flops``) and its
fraction of the measured bf16 peak, for AR also the weight-stream GB/s against the measured
copy bandwidth, and the speed-up over the baseline's prompts/s. A batch is skipped (recorded as
"skipped: budget") when its predicted cost (compile + 3 runs, scaled from the previous batch)
would pass ``--budget-s``; a batch that runs out of memory ends its sweep. The JSON is
rewritten atomically after every call; a compact table is printed at the end.

Device (``.whl`` holds the pure-python wheels of the .venv's flax, optax, orbax-checkpoint,
gguf and prometheus-client; ``--check`` initialises tiny params on the CPU, so a flax that
does not work with the device's JAX falls back to the device's own packages)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=.:/tmp/site
    JAX_PLATFORMS=cpu python3 scripts/bench_gpu.py --check || export PYTHONPATH=.
    python3 -u scripts/bench_gpu.py --budget-s 400 --out $OUT/gpu.json

CPU smoke test (tiny shapes, every code path, about a minute; tests/test_bench_gpu.py runs it)::

    nice -n 10 .venv/bin/python scripts/bench_gpu.py --tiny --out /tmp/gpu_tiny.json
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before any JAX import

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# scripts/ is sys.path[0] when this file is run: the CPU benchmark's helpers import directly.
from bench_sampler import (forward_flops, hf_ar_trace, hf_diffusion_trace,  # noqa: E402
                           median, repo_command, repo_path, write_json)

T_START = time.perf_counter()

FULL = dict(prompt_len=64, dif_gen=128, dif_steps=32, dif_block=128, dif_batches=(1, 8, 32, 64),
            ar_gen=32, ar_batches=(1, 16, 64, 128), repeats=2, baseline_prompts=8,
            matmul_n=8192, matmul_reps=5, matmul_inner=10, hbm_bytes=2 << 30,
            first_compile_guess_s=45.0, ar_reserve_s=120.0, dtype="bfloat16")
TINY = dict(FULL, prompt_len=16, dif_gen=32, dif_steps=8, dif_block=32, dif_batches=(1, 2),
            ar_gen=8, ar_batches=(1, 2), matmul_n=256, matmul_reps=3, matmul_inner=2,
            hbm_bytes=16 << 20, first_compile_guess_s=10.0, ar_reserve_s=20.0)


def elapsed() -> float:
    return time.perf_counter() - T_START


def error_text(e: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
    return f"{type(e).__name__}: {e}"[:1500] + "\n" + tb[-1500:]


def is_oom(e: BaseException) -> bool:
    s = str(e).lower()
    return "resource_exhausted" in s or "out of memory" in s


# ============================================================================ model shapes


def model_configs(tiny: bool):
    """(diffusion config, AR config, safe prompt-id range): LLaDA-8B and Llama-3.1-8B shapes
    (REFERENCE.md sections 3 and 5), or 2-layer stand-ins with the same structure."""
    from sri_jax.models.config import LLADA_8B, ModelConfig, RopeScaling

    llama31_8b = ModelConfig(  # Llama-3.1-8B(-Instruct): GQA 32/8, llama3 RoPE scaling
        family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=RopeScaling(), max_position_embeddings=131072,
        bos_token_id=128000, eos_token_id=128009, pad_token_id=128009)
    if not tiny:
        # ids below the special-token ranges (LLaDA 126080+, Llama-3 128000+)
        return LLADA_8B, llama31_8b, (3, 126000)
    small = dict(vocab_size=512, hidden_size=128, num_layers=2, num_heads=4, head_dim=32,
                 bos_token_id=508, eos_token_id=509, pad_token_id=509)
    dif = LLADA_8B.replace(intermediate_size=256, num_kv_heads=4, mask_token_id=511,
                           eot_token_id=510, **small)
    ar = llama31_8b.replace(intermediate_size=384, num_kv_heads=2, **small)
    return dif, ar, (3, 500)


def flop_sizes(c) -> dict:
    """The size dict ``bench_sampler.forward_flops`` reads."""
    return dict(hidden=c.hidden_size, intermediate=c.intermediate_size, layers=c.num_layers,
                heads=c.num_heads, kv_heads=c.num_kv_heads, vocab=c.vocab_size)


def hf_llama_kwargs(c) -> dict:
    """transformers ``LlamaConfig`` kwargs of the same shape (v5 ``rope_parameters``)."""
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling is not None:
        rope.update(dataclasses.asdict(c.rope_scaling))
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                intermediate_size=c.intermediate_size, num_hidden_layers=c.num_layers,
                num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
                head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps, rope_parameters=rope,
                max_position_embeddings=c.max_position_embeddings,
                tie_word_embeddings=c.tie_word_embeddings, bos_token_id=c.bos_token_id,
                eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)


def ar_flops(sz: dict, prompt: int, gen: int) -> float:
    """Executed FLOPs of one sri_jax AR row: a prefill of ``prompt`` tokens and gen-1 cached
    decode steps, every query attending over the whole cache buffer (prompt + gen keys), the
    LM head at the gen positions that produce tokens."""
    per_tok = forward_flops(sz, 1, 0)
    per_head = forward_flops(sz, 0, 1)["lm_head"]
    queries, keys = prompt + gen - 1, prompt + gen
    return queries * per_tok["matmul"] + queries * keys * per_tok["attention"] + gen * per_head


# ============================================================================ torch baseline


def torch_matmul(n: int, reps: int, inner: int, dev) -> dict:
    import torch

    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a @ b
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync()
        times.append((time.perf_counter() - t0) / inner)
    return {"n": n, "tflops": 2 * n ** 3 / median(times) / 1e12, "times_s": times}


def torch_workload(w: dict, dev, seed: int) -> dict:
    """Build the HF model on the device (bf16, random init), time it, save its weights for
    the sri_jax side (``w["weights_dir"]``), free it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**w["hf_config"])
    cfg.is_causal = w["causal"]  # transformers >= 5.2: bidirectional Llama for diffusion
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with dev:
        model = LlamaForCausalLM._from_config(cfg, dtype=getattr(torch, w["dtype"])).eval()
    if model.device.type != dev.type:  # never time an 8B model on the host by mistake
        model.to(dev)
    res = {"attn_implementation": getattr(model.config, "_attn_implementation", None),
           "param_device": str(model.device)}
    try:
        res.update(time_traces(model, w, t0))
        if w.get("weights_dir"):
            t1 = time.perf_counter()
            model.save_pretrained(w["weights_dir"])
            res["save_s"] = time.perf_counter() - t1
    finally:
        del model
        gc.collect()
        if dev.type == "cuda":
            res["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return res


def time_traces(model, w: dict, t_build: float) -> dict:
    """One full untimed warm-up trace (its own prompt), then the w['prompts'] timed prompts
    traced one at a time; their tokens and sigma go to ``w["result_path"]`` (npz)."""
    import torch

    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    res = {"build_s": time.perf_counter() - t_build, "prompts": w["prompts"]}
    data = np.load(w["data_path"])
    prompts, warm = data["prompts"][:w["prompts"]], data["warmup_prompt"]
    mu_p, mu_n = data["mu_p"].astype(np.float64), data["mu_n"].astype(np.float64)
    g, p, steps = w["gen"], w["prompt_len"], w["steps"]
    if w["causal"]:  # (tokens, sigma, forward passes run: fewer after an early EOS)
        def trace(pr):
            return hf_ar_trace(model, pr, g, mu_p, mu_n, set(w["stops"]), w["pad_id"])
    else:
        def trace(pr):
            return (*hf_diffusion_trace(model, pr, g, steps, w["block"], w["mask_id"], mu_p,
                                        mu_n), steps)
    t0 = time.perf_counter()
    trace(warm)
    sync()
    res["warmup_s"] = time.perf_counter() - t0
    times, tokens, sigma, passes = [], [], [], 0
    for pr in prompts:
        t0 = time.perf_counter()
        tok, sig, n = trace(pr)
        sync()
        times.append(time.perf_counter() - t0)
        tokens.append(tok)
        sigma.append(sig)
        passes += n
    np.savez(w["result_path"], tokens=np.stack(tokens), sigma=np.stack(sigma))
    med = median(times)
    sz = w["sizes"]
    if w["causal"]:  # full re-run, LM head over every position (HF default)
        per_prompt = sum(forward_flops(sz, p + t, p + t)["total"] for t in range(g))
        flops = per_prompt * passes / g
    else:
        flops = passes * forward_flops(sz, p + g, p + g)["total"]
    res.update(times_s=times, median_s=med, total_s=sum(times), forward_passes=passes,
               prompts_per_s=1.0 / med, tokens_per_s=g / med,
               tflops=flops / len(prompts) / med / 1e12)
    return res


def torch_child(spec_path: Path, out: Path) -> None:
    """Entry point of the baseline subprocess: never imports JAX."""
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    spec = json.loads(spec_path.read_text())
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = {"torch": torch.__version__, "transformers": transformers.__version__,
           "torch_cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
    print(f"[torch] {res['device']}, torch {res['torch']}, transformers "
          f"{res['transformers']}", flush=True)
    jobs = [("matmul_bf16", lambda: torch_matmul(*spec["matmul"], dev))]
    jobs += [(k, functools.partial(torch_workload, w, dev, spec["seed"]))
             for k, w in spec["workloads"].items()]
    for name, job in jobs:
        try:
            res[name] = job()
        except Exception as e:  # recorded; the next job still runs
            res[name] = {"error": error_text(e)}
            if dev.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
        write_json(res, out)
        r = res[name]
        msg = (f"ERROR {r['error'].splitlines()[0]}" if "error" in r else
               f"{r['tflops']:.1f} TFLOP/s" if name == "matmul_bf16" else
               f"{r['prompts_per_s']:.3f} prompts/s (median {r['median_s']:.3f}s of "
               f"{r['prompts']} prompts, build {r['build_s']:.1f}s, warm-up trace "
               f"{r['warmup_s']:.2f}s)")
        print(f"[torch] {name}: {msg}", flush=True)


# ============================================================================ the run record


class Run:
    """The JSON document, rewritten atomically after every measurement, and the budget."""

    def __init__(self, out: Path, budget_s: float, doc: dict):
        self.out, self.budget_s, self.doc = out, budget_s, doc
        self.save()

    def left(self) -> float:
        return self.budget_s - elapsed()

    def save(self) -> None:
        self.doc["elapsed_s"] = round(elapsed(), 2)
        write_json(self.doc, self.out)

    @contextlib.contextmanager
    def section(self, name: str):
        """Run one section; an exception is recorded under errors[name], never raised."""
        print(f"\n== {name} (t = {elapsed():.0f}s, budget left {self.left():.0f}s)", flush=True)
        try:
            yield
        except Exception as e:
            self.doc.setdefault("errors", {})[name] = error_text(e)
            print(f"ERROR in {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        finally:
            self.save()


def versions() -> dict:
    v = {"python": platform.python_version()}
    for dist in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax",
                 "numpy", "torch", "transformers"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    import flax

    v["flax_imported"] = getattr(flax, "__version__", "?")
    v["flax_path"] = str(Path(flax.__file__).parent)
    return v


def gpu_info() -> list:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,"
                              "power.limit,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


# ============================================================================ JAX measurements

_COMPILE_EVENTS: list = []


def _on_event(event: str, duration: float, **_):
    if event.startswith("/jax/core/compile/"):
        _COMPILE_EVENTS.append(duration)


def jax_peaks(sz: dict) -> dict:
    """bf16 matmul rate (n^3, median of reps, each the mean of `inner` back-to-back calls) and
    the copy bandwidth of an elementwise pass over a large array (read + write bytes)."""
    import jax
    import jax.numpy as jnp

    def rate(f, args, reps, inner):
        f(*args).block_until_ready()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                y = f(*args)
            y.block_until_ready()
            times.append((time.perf_counter() - t0) / inner)
        return times

    n = sz["matmul_n"]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    mm = rate(jax.jit(lambda x, y: x @ y), (a, b), sz["matmul_reps"], sz["matmul_inner"])
    del a, b
    x = jnp.ones((sz["hbm_bytes"] // 4,), jnp.float32)
    cp = rate(jax.jit(lambda v: v + 1.0), (x,), sz["matmul_reps"], sz["matmul_inner"])
    del x
    return {"matmul_bf16": {"n": n, "times_s": mm, "tflops": 2 * n ** 3 / median(mm) / 1e12,
                            "tflops_best": 2 * n ** 3 / min(mm) / 1e12},
            "hbm_copy": {"bytes": sz["hbm_bytes"], "times_s": cp,
                         "gb_per_s": 2 * sz["hbm_bytes"] / median(cp) / 1e9}}


def memory_peak_gb():
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 1e9


def time_generate(run: Run, entry: dict, model, ids, cfg, centers, repeats: int):
    """First call (compile + run), then `repeats` timed calls; ``generate`` returns numpy, so
    each wall time includes the device work. Fills ``entry`` and saves after every call;
    returns the last GenerationResult."""
    import sri_jax

    last = []

    def call():
        t0 = time.perf_counter()
        last[:] = [sri_jax.generate(model, input_ids=ids, cfg=cfg, centers=centers)]
        return time.perf_counter() - t0

    _COMPILE_EVENTS.clear()
    entry["first_call_s"] = call()
    entry["compile_s"] = float(sum(_COMPILE_EVENTS))
    entry["status"] = "running"
    entry["times_s"] = []
    run.save()
    for _ in range(repeats):
        entry["times_s"].append(call())
        run.save()
    entry["median_s"] = median(entry["times_s"])
    if not _COMPILE_EVENTS:  # no compile events recorded by this JAX: first call - a run
        entry["compile_s"] = max(entry["first_call_s"] - entry["median_s"], 0.0)
    entry["status"] = "ok"
    return last[0]


def agreement(tokens, sigma, base_tokens, base_sigma) -> dict:
    """Tokens row by row against the baseline's, sigma on the rows whose tokens agree."""
    rows_eq = np.all(tokens == base_tokens, axis=1)
    err = np.abs(np.asarray(sigma, np.float64) - base_sigma)[rows_eq]
    return {"rows": int(len(rows_eq)), "token_rows_equal": int(rows_eq.sum()),
            "token_agreement": float(np.mean(tokens == base_tokens)),
            "sigma_max_abs_diff": float(err.max()) if rows_eq.any() else None}


def load_model(key: str, mcfg, label: str, weights_dir, sec: dict, dtype: str):
    """The baseline's own weights when its child saved them, else random ones drawn on the
    device (then nothing can be compared)."""
    import jax
    import jax.numpy as jnp

    from sri_jax import Model
    from sri_jax.models.decoder import random_params

    t0 = time.perf_counter()
    if weights_dir is not None and (Path(weights_dir) / "config.json").is_file():
        from sri_jax.weights.hf import load_hf_model

        m = load_hf_model(weights_dir, dtype=dtype, load_tokenizer=False, name=label)
        # the same HF Llama weights; diffusion: bidirectional with LLaDA's special ids
        over = {k: getattr(mcfg, k) for k in ("causal", "mask_token_id", "eos_token_id",
                                              "eot_token_id", "pad_token_id")}
        model = Model(config=m.config.replace(**over), params=m.params, name=label,
                      weight_hash=m.weight_hash)
        sec["weights"] = f"the baseline's (HF save_pretrained, {dtype})"
    else:
        # jitted: drawn on the device and cast to bf16 in one program (no host copy)
        params = jax.jit(functools.partial(random_params, mcfg, 0, jnp.dtype(dtype)))()
        model = Model(config=mcfg, params=params, name=label)
        sec["weights"] = "random, drawn here (no shared checkpoint: agreement not checked)"
    jax.block_until_ready(model.params)
    sec["init_s"] = time.perf_counter() - t0
    return model


def sweep(run: Run, key: str, label: str, mcfg, scfg, batches, sz: dict, data: dict,
          deadline: float, flops_per_row: float, baseline: dict, weights_dir=None,
          base_result=None) -> None:
    """The baseline's bf16 weights (or random ones) on the device; the agreement check on the
    baseline's prompts; SRI on at each batch size (until the budget or the memory runs out),
    then SRI off at the largest batch measured."""
    import jax

    import sri_jax
    from sri_jax import Centers

    sec = run.doc[key] = {"model": label, "config": mcfg.to_dict(), "sampler": scfg.to_dict(),
                          "prompt_len": sz["prompt_len"], "flops_per_row": flops_per_row,
                          "runs": []}
    if elapsed() + sz["first_compile_guess_s"] > deadline:
        sec["runs"] = [{"batch": b, "sri": "on", "status": "skipped: budget"} for b in batches]
        print(f"{key}: skipped: budget ({deadline - elapsed():.0f}s left)", flush=True)
        return
    model = load_model(key, mcfg, label, weights_dir, sec, sz["dtype"])
    params = model.params
    sec["param_bytes"] = int(sum(a.nbytes for a in jax.tree.leaves(params)))
    print(f"{label}: {sec['param_bytes'] / 1e9:.2f} GB {sz['dtype']} params on "
          f"{jax.tree.leaves(params)[0].devices()} in {sec['init_s']:.1f}s ({sec['weights']})",
          flush=True)
    prompts = data["prompts"]
    centers = Centers(data["mu_p"], data["mu_n"])
    peak, hbm = run.doc.get("peak", {}), run.doc.get("hbm", {})
    base_pps = baseline.get("prompts_per_s")
    repeats = sz["repeats"]
    if base_result is not None and sec["weights"].startswith("the baseline"):
        n = len(base_result["tokens"])
        entry = sec["check"] = {"batch": n, "sri": "on", "status": "starting"}
        try:
            t0 = time.perf_counter()
            res = sri_jax.generate(model, input_ids=prompts[:n], cfg=scfg, centers=centers)
            entry.update(first_call_s=time.perf_counter() - t0, status="ok")
        except Exception as e:
            entry.update(status="error", error=error_text(e))
        else:
            entry.update(agreement(res.tokens, res.sri, base_result["tokens"],
                                   base_result["sigma"]))
            if entry["token_rows_equal"] < n:
                run.doc.setdefault("warnings", []).append(
                    f"{key}: sri_jax tokens differ from the baseline's in "
                    f"{n - entry['token_rows_equal']}/{n} rows (token agreement "
                    f"{entry['token_agreement']:.3f}; {sz['dtype']} on both sides: near-tied "
                    "logits can decide differently)")
        run.save()
        print(f"{key}: agreement with the baseline: {entry.get('token_rows_equal')}/{n} rows, "
              f"sigma max |diff| {entry.get('sigma_max_abs_diff')}", flush=True)

    def predict(prev, batch):
        """Compile + first call + repeats, scaled linearly in batch from `prev` (over-
        estimates at small batches, where a call is bound by the weight reads)."""
        if prev is None:
            return sz["first_compile_guess_s"]
        return prev["compile_s"] + (1 + repeats) * prev["median_s"] * batch / prev["batch"]

    results = {}

    def measure(batch, sri_on):
        entry = {"batch": batch, "sri": "on" if sri_on else "off", "status": "starting"}
        sec["runs"].append(entry)
        try:
            results[batch, sri_on] = time_generate(run, entry, model, prompts[:batch], scfg,
                                                   centers if sri_on else None, repeats)
        except Exception as e:
            entry["status"] = "oom" if is_oom(e) else "error"
            entry["error"] = error_text(e)
            gc.collect()
        else:
            t = entry["median_s"]
            flops = batch * flops_per_row
            entry.update(prompts_per_s=batch / t, tokens_per_s=batch * scfg.gen_length / t,
                         tflops=flops / t / 1e12)
            if peak.get("tflops"):
                entry["peak_fraction"] = entry["tflops"] / peak["tflops"]
            if mcfg.causal:  # decode is bound by streaming the weights once per token
                entry["weight_gb_per_s"] = sec["param_bytes"] * scfg.gen_length / t / 1e9
                if hbm.get("gb_per_s"):
                    entry["hbm_fraction"] = entry["weight_gb_per_s"] / hbm["gb_per_s"]
            if base_pps:
                entry["speedup_vs_baseline"] = entry["prompts_per_s"] / base_pps
        entry["device_peak_gb"] = memory_peak_gb()
        run.save()
        print(row_text(key, entry), flush=True)
        return entry

    def skip(batch, sri, predicted):
        sec["runs"].append({"batch": batch, "sri": sri, "status": "skipped: budget",
                            "predicted_s": predicted})
        print(f"{key}: batch {batch} SRI {sri} skipped: budget (predicted {predicted:.0f}s, "
              f"{deadline - elapsed():.0f}s left)", flush=True)

    best = None
    for i, batch in enumerate(batches):
        # room for this batch and for the SRI-off run at this batch afterwards (about as
        # much again: its own compile and calls)
        cost = predict(best, batch) * (1 if best is None else 2)
        if elapsed() + cost > deadline:
            for b in batches[i:]:
                skip(b, "on", predict(best, b))
            break
        entry = measure(batch, True)
        if entry["status"] != "ok":
            break  # OOM (or an error) at this size: larger batches would fail too
        best = entry
    if best is None:
        return
    cost = best["compile_s"] + (1 + repeats) * best["median_s"]
    if elapsed() + cost > deadline:
        skip(best["batch"], "off", cost)
        return
    off = measure(best["batch"], False)
    if off["status"] == "ok":
        sec["sri_overhead_pct"] = 100.0 * (best["median_s"] - off["median_s"]) / off["median_s"]
        sec["sri_overhead_batch"] = best["batch"]
        sec["tokens_on_equal_off"] = bool(np.array_equal(
            results[best["batch"], True].tokens, results[best["batch"], False].tokens))


# ============================================================================ output


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def row_text(workload: str, r: dict) -> str:
    if r.get("status") != "ok":
        return f"{workload:<10} {r['batch']:>5} {r['sri']:>3}  {r['status']}" + (
            f": {r['error'].splitlines()[0][:90]}" if "error" in r else "")
    pf = r.get("peak_fraction")
    return (f"{workload:<10} {r['batch']:>5} {r['sri']:>3} {r['compile_s']:>9.1f} "
            f"{r['median_s']:>9.3f} {r['prompts_per_s']:>10.2f} {r['tokens_per_s']:>9.0f} "
            f"{r['tflops']:>8.1f} {fmt(pf and 100 * pf, '>6.1f')} "
            f"{fmt(r.get('hbm_fraction') and 100 * r['hbm_fraction'], '>5.1f')} "
            f"{fmt(r.get('speedup_vs_baseline'), '>8.1f')}")


def print_summary(doc: dict) -> None:
    print("\n" + "=" * 92)
    v = doc.get("versions", {})
    print(f"sri_jax GPU benchmark{' (TINY smoke sizes)' if doc['tiny'] else ''}: "
          f"{', '.join(doc.get('devices', [])) or '?'}")
    print("versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "jax", "jaxlib", "flax",
                                                          "torch", "transformers") if k in v))
    pk, hb = doc.get("peak", {}), doc.get("hbm", {})
    tb = doc.get("baseline", {})
    print(f"bf16 matmul {pk.get('n', '?')}^3: JAX {fmt(pk.get('tflops'), '.1f')} TFLOP/s "
          f"(best {fmt(pk.get('tflops_best'), '.1f')}), torch "
          f"{fmt(tb.get('matmul_bf16', {}).get('tflops'), '.1f')}; HBM copy "
          f"{fmt(hb.get('gb_per_s'), '.0f')} GB/s")
    hdr = (f"{'workload':<10} {'batch':>5} {'SRI':>3} {'compile s':>9} {'median s':>9} "
           f"{'prompts/s':>10} {'tokens/s':>9} {'TFLOP/s':>8} {'%peak':>6} {'%HBM':>5} "
           f"{'vs torch':>8}")
    print(hdr)
    print("-" * len(hdr))
    for key in ("diffusion", "ar"):
        b = tb.get(key)
        if b:
            if "error" in b:
                print(f"{key:<10} torch baseline ERROR: {b['error'].splitlines()[0][:70]}")
            else:
                print(f"{key:<10} torch loop, {b['prompts']} prompts one at a time after a "
                      f"warm-up trace: median {b['median_s']:.3f} s/prompt, "
                      f"{b['prompts_per_s']:.3f} prompts/s, {b['tokens_per_s']:.1f} tokens/s, "
                      f"{b['tflops']:.1f} TFLOP/s")
        for r in doc.get(key, {}).get("runs", []):
            print(row_text(key, r))
    print("-" * len(hdr))
    for key in ("diffusion", "ar"):
        sec = doc.get(key, {})
        if sec:
            s = sec.get("sampler", {})
            print(f"{key}: {sec['model']}, prompt {sec['prompt_len']}, gen {s.get('gen_length')}"
                  f", steps {s.get('steps')}, block {s.get('block_length')}; params "
                  f"{sec.get('param_bytes', 0) / 1e9:.1f} GB made in {fmt(sec.get('init_s'), '.1f')}s;"
                  f" SRI overhead " + (f"{sec['sri_overhead_pct']:+.2f}% at batch "
                                        f"{sec['sri_overhead_batch']}"
                                        if "sri_overhead_pct" in sec else "n/a"))
            c = sec.get("check", {})
            print(f"{key}: agreement with the baseline (same weights, its {c.get('rows', '-')} "
                  f"prompts): token rows equal {c.get('token_rows_equal', '-')}, token "
                  f"agreement {fmt(c.get('token_agreement'), '.3f')}, sigma max |diff| "
                  f"{fmt(c.get('sigma_max_abs_diff'), '.2e')}; SRI on/off tokens equal "
                  f"{sec.get('tokens_on_equal_off', '-')}")
    for w in doc.get("warnings", []):
        print(f"WARNING {w}")
    for name, err in doc.get("errors", {}).items():
        print(f"ERROR {name}: {err.splitlines()[0][:150]}")
    print("(compile s = JAX compile events of the first call; median of "
          f"{doc['sizes']['repeats']} timed calls; %peak = model FLOP/s / the JAX bf16 matmul "
          "rate; %HBM = weight bytes x tokens / s over the copy bandwidth; vs torch = prompts/s "
          "over the baseline's)")
    print(f"total {elapsed():.0f}s; wrote {doc['out']}")


# ============================================================================ main


def self_check() -> None:
    import flax
    import jax
    import jax.numpy as jnp

    from sri_jax.models.decoder import random_params

    for cfg in model_configs(tiny=True)[:2]:
        jax.block_until_ready(random_params(cfg, 0, jnp.bfloat16))
    print(f"check ok: jax {jax.__version__}, flax {flax.__version__} from "
          f"{Path(flax.__file__).parent}")


def run_baseline(run: Run, sz: dict, workloads: dict, timeout: float) -> None:
    """The torch baseline in a subprocess; its partial results survive a timeout."""
    with tempfile.TemporaryDirectory(prefix="sri_jax_bench_gpu_") as tmp:
        spec, part = Path(tmp) / "spec.json", Path(tmp) / "torch.json"
        spec.write_text(json.dumps({"seed": 0, "workloads": workloads, "matmul": [
            sz["matmul_n"], sz["matmul_reps"], sz["matmul_inner"]]}))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-child", str(spec),
               "--out", str(part)]
        try:
            proc = subprocess.run(cmd, timeout=timeout)
            status = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"killed after {timeout:.0f}s (timeout)"
        res = json.loads(part.read_text()) if part.exists() else {}
    res["status"] = status
    run.doc["baseline"] = res
    if not status.startswith("exit 0"):
        run.doc.setdefault("errors", {})["torch baseline"] = status
    print(f"[torch] {status}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "sri_jax_gpu.json")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="wall-clock budget from process start; later measurements that would "
                         "pass it are skipped")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU smoke test")
    ap.add_argument("--ar-gen", type=int, default=None,
                    help="AR tokens (default 32, the reference's T; tiny 8)")
    ap.add_argument("--ar-batches", help="comma-separated AR batch sizes (default 1,16,64,128)")
    ap.add_argument("--dif-batches", help="comma-separated diffusion batch sizes "
                                          "(default 1,8,32,64)")
    ap.add_argument("--ar-reserve-s", type=float, default=None,
                    help="budget kept back for the AR sweep while the diffusion sweep runs")
    ap.add_argument("--baseline-timeout-s", type=float, default=240.0)
    ap.add_argument("--baseline-prompts", type=int, default=None,
                    help="timed baseline prompts per workload, after one warm-up trace "
                         "(default and minimum 8)")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                    help="weights and activations of both sides (default bfloat16; float32 "
                         "makes the agreement check exact, for the CPU smoke test)")
    ap.add_argument("--no-check", action="store_true",
                    help="skip sharing the baseline's weights with sri_jax (no save/load of "
                         "two 16 GB checkpoints); then tokens and sigma are not compared")
    for part in ("baseline", "diffusion", "ar"):
        ap.add_argument(f"--skip-{part}", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="only initialise tiny random params (is this flax usable with this "
                         "JAX?) and exit")
    ap.add_argument("--torch-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_child:
        return torch_child(args.torch_child, args.out)
    if args.check:
        return self_check()

    sz = dict(TINY if args.tiny else FULL)
    if args.baseline_prompts is not None:
        if args.baseline_prompts < 8:
            ap.error("--baseline-prompts must be >= 8 (a median over fewer is not a figure)")
        sz["baseline_prompts"] = args.baseline_prompts
    if args.ar_gen:
        sz["ar_gen"] = args.ar_gen
    if args.dtype:
        sz["dtype"] = args.dtype
    for key in ("ar_batches", "dif_batches"):
        if getattr(args, key):
            sz[key] = tuple(int(b) for b in getattr(args, key).split(","))
    if args.ar_reserve_s is not None:
        sz["ar_reserve_s"] = args.ar_reserve_s
    doc = {"tiny": args.tiny, "budget_s": args.budget_s, "sizes": sz,
           "out": repo_path(str(args.out)), "command": repo_command(argv),
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "env": {k: os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS",
                                                  "PYTHONPATH")}}
    run = Run(args.out, args.budget_s, doc)
    tmp = None
    try:
        import jax

        with run.section("versions"):
            doc["versions"] = versions()
            doc["jax_backend"] = jax.default_backend()
            doc["devices"] = [f"{d.device_kind} ({d.platform})" for d in jax.devices()]
            doc["nvidia_smi"] = gpu_info()
            print(json.dumps(doc["versions"]), "\n", doc["devices"], doc["nvidia_smi"],
                  flush=True)
            jax.monitoring.register_event_duration_secs_listener(_on_event)

        from sri_jax import SamplerConfig
        from sri_jax.sampling.batching import bucket_length

        dcfg, acfg, id_range = model_configs(args.tiny)
        p = sz["prompt_len"]
        dif = SamplerConfig(steps=sz["dif_steps"], gen_length=sz["dif_gen"],
                            block_length=sz["dif_block"], temperature=0.0,
                            remasking="low_confidence", mode="diffusion")
        ar = SamplerConfig.autoregressive(gen_length=sz["ar_gen"])
        # one set of prompt ids and centers per workload, shared by both sides: the baseline
        # traces the first `baseline_prompts` rows (after a warm-up trace on its own prompt),
        # sri_jax the first `batch` rows of each sweep step
        tmp = Path(tempfile.mkdtemp(prefix="sri_jax_bench_gpu_"))
        rng = np.random.default_rng(1)
        data = {}
        for key, c, steps, batches in (("diffusion", dcfg, dif.steps, sz["dif_batches"]),
                                       ("ar", acfg, ar.steps, sz["ar_batches"])):
            n = max(max(batches), sz["baseline_prompts"])
            ids = rng.integers(*id_range, size=(n + 1, p)).astype(np.int32)
            mu = rng.standard_normal((2, steps, c.hidden_size)).astype(np.float32)
            data[key] = {"prompts": ids[:n], "warmup_prompt": ids[n], "mu_p": mu[0],
                         "mu_n": mu[1]}
            np.savez(tmp / f"{key}_data.npz", **data[key])
        common = {"prompt_len": p, "prompts": sz["baseline_prompts"]}
        workloads = {
            "diffusion": dict(common, hf_config=hf_llama_kwargs(dcfg), causal=False,
                              sizes=flop_sizes(dcfg), gen=dif.gen_length, steps=dif.steps,
                              block=dif.block_length, mask_id=dcfg.mask_token_id, stops=[]),
            "ar": dict(common, hf_config=hf_llama_kwargs(acfg), causal=True,
                       sizes=flop_sizes(acfg), gen=ar.gen_length, steps=ar.steps,
                       pad_id=acfg.pad_token_id,
                       stops=[t for t in (acfg.eos_token_id, acfg.eot_token_id)
                              if t is not None])}
        for key, w in workloads.items():
            w.update(dtype=sz["dtype"], data_path=str(tmp / f"{key}_data.npz"),
                     result_path=str(tmp / f"{key}_result.npz"),
                     weights_dir=None if args.no_check else str(tmp / f"{key}_weights"))
        skip = {"diffusion": args.skip_diffusion, "ar": args.skip_ar}
        workloads = {k: w for k, w in workloads.items() if not skip[k]}

        def shared(key):
            """(weights dir, baseline tokens / sigma) the baseline child left for `key`."""
            w = workloads[key]
            if not Path(w["result_path"]).is_file():
                return None, None
            with np.load(w["result_path"]) as r:
                return w["weights_dir"], {"tokens": r["tokens"], "sigma": r["sigma"]}

        # torch first: it frees the GPU on exit before JAX allocates anything large
        if not args.skip_baseline:
            with run.section("torch baseline"):
                run_baseline(run, sz, workloads,
                             min(args.baseline_timeout_s, max(run.left() - 120.0, 30.0)))

        with run.section("peaks"):
            pk = jax_peaks(sz)
            doc["peak"], doc["hbm"] = pk["matmul_bf16"], pk["hbm_copy"]
            print(f"bf16 matmul {pk['matmul_bf16']['tflops']:.1f} TFLOP/s, HBM copy "
                  f"{pk['hbm_copy']['gb_per_s']:.0f} GB/s", flush=True)

        print(f"\n{'workload':<10} {'batch':>5} {'SRI':>3} {'compile s':>9} {'median s':>9} "
              f"{'prompts/s':>10} {'tokens/s':>9} {'TFLOP/s':>8} {'%peak':>6} {'%HBM':>5} "
              f"{'vs torch':>8}")
        baseline = doc.get("baseline", {})
        if not args.skip_diffusion:
            with run.section("diffusion"):
                pad = bucket_length(p, dcfg.max_position_embeddings - dif.gen_length)
                flops = dif.steps * forward_flops(flop_sizes(dcfg), pad + dif.gen_length,
                                                  dif.block_length)["total"]
                reserve = 0.0 if args.skip_ar else sz["ar_reserve_s"]
                wdir, base = shared("diffusion")
                sweep(run, "diffusion", "LLaDA-8B shape" + (" (tiny)" if args.tiny else ""),
                      dcfg, dif, sz["dif_batches"], sz, data["diffusion"],
                      args.budget_s - reserve, flops, baseline.get("diffusion", {}), wdir, base)
            shutil.rmtree(tmp / "diffusion_weights", ignore_errors=True)
            gc.collect()  # the 8B params of the diffusion model go before the AR model's
            jax.clear_caches()
        if not args.skip_ar:
            with run.section("ar"):
                pad = bucket_length(p, acfg.max_position_embeddings - ar.gen_length)
                wdir, base = shared("ar")
                sweep(run, "ar", "Llama-3.1-8B shape" + (" (tiny)" if args.tiny else ""),
                      acfg, ar, sz["ar_batches"], sz, data["ar"], args.budget_s,
                      ar_flops(flop_sizes(acfg), pad, ar.gen_length), baseline.get("ar", {}),
                      wdir, base)
    except BaseException as e:  # outside any section (imports) or interrupted: record it
        doc.setdefault("errors", {})["main"] = error_text(e)
        raise
    finally:
        run.save()
        print_summary(doc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return doc


if __name__ == "__main__":
    main()
