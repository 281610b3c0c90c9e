#!/usr/bin/env python
"""Sampler throughput: sri_jax's fused samplers vs a reference-style PyTorch/HF loop.

One run, one set of weights, one table, one JSON file (docs/benchmarks.md explains the method).

Model: a random-init SmolLM2-135M-sized Llama (hidden 576, 30 layers, 9/3 heads, FFN 1536,
vocab 49152, tied, theta 1e5) built with HF transformers in PyTorch fp32, written with
``save_pretrained`` and loaded into sri_jax with ``load_hf_model(dir, dtype="float32")``: both
sides hold bit-identical fp32 weights. The diffusion benchmark uses the same weights as a
bidirectional model (sri_jax: ``causal=False`` + a mask id; HF: ``config.is_causal = False``).
Prompts are random token ids of one fixed length (no tokenizer); centers are random [T, D].

Measured (warm-up / compile excluded from the timings and reported separately):

1. AR tracing: HF baseline in the reference style (one prompt at a time, Python loop per step,
   no KV cache: the whole sequence is re-run with ``output_hidden_states=True`` every step,
   the last-layer hidden state at the last position is pulled to the host and sigma computed
   in numpy float64, greedy argmax) vs ``sri_jax.generate`` AR (whole batch, one fused call)
   with centers, and with SRI off (centers=None).
2. Diffusion tracing: HF bidirectional baseline (one prompt at a time, LLaDA ``generate`` loop:
   full forward with hidden states, softmax over the full canvas logits, confidence,
   ``torch.topk`` commit, low_confidence remasking at temperature 0; mean-pool of the last
   hidden state over the response, sigma on the host) vs ``sri_jax.generate`` diffusion with
   and without centers.
3. SRI overhead: sri_jax with centers vs without on the same workload (on/off runs
   interleaved, medians).
4. Matmul peak: fp32 n^3 matmul under XLA (jitted) and under torch, same run; the diffusion
   sampler's achieved FLOP/s divided by the XLA peak.

Correctness (cheap, on the timed prompts): at temperature 0 the sri_jax tokens must equal
the baseline's (a warning otherwise), and sigma must agree where the tokens agree.

    .venv/bin/python scripts/bench_sampler.py            # full run (tens of minutes on 2 cores)
    .venv/bin/python scripts/bench_sampler.py --quick    # smoke run, tiny sizes (~1 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "sampler.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "sri_jax_bench_sampler_quick.json"

# SmolLM2-135M shape (REFERENCE.md section 5) and the reference workloads (sections 1 and 7).
FULL = dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152,
            rope_theta=1e5, prompt_len=48,
            ar_gen=32, ar_batch=16,
            dif_gen=128, dif_steps=32, dif_block=128, dif_batch=8,
            matmul_n=2048, matmul_reps=7)
QUICK = dict(FULL, layers=2, prompt_len=16, ar_gen=8, ar_batch=4,
             dif_gen=32, dif_steps=8, dif_block=32, dif_batch=2,
             matmul_n=512, matmul_reps=5)

TARGETS = {"ar_speedup": 20.0, "diffusion_speedup": 2.0}
DRIFT_WARN_PCT = 10.0  # warn when the matmul peak moves more than this during a run
TAU = 0.1
EPS = 1e-8
BOS, EOS, PAD = 1, 2, 2


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median(xs):
    return float(statistics.median(xs))


# ============================================================================ the model


def build_checkpoint(sz: dict, path: Path, seed: int, init_std: float):
    """Random-init HF Llama (fp32) saved with save_pretrained; returns the torch model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=sz["vocab"], hidden_size=sz["hidden"], intermediate_size=sz["intermediate"],
        num_hidden_layers=sz["layers"], num_attention_heads=sz["heads"],
        num_key_value_heads=sz["kv_heads"], rms_norm_eps=1e-5, rope_theta=sz["rope_theta"],
        max_position_embeddings=8192, tie_word_embeddings=True, initializer_range=init_std,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(str(path))
    return model


def bidirectional_hf(path: Path):
    """The same saved weights as a bidirectional HF model (transformers >= 5.2 is_causal)."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(str(path))
    cfg.is_causal = False
    return LlamaForCausalLM.from_pretrained(str(path), config=cfg,
                                            dtype=torch.float32).eval()


# ============================================================================ host-side SRI


def host_sigma(phi, mu_harmless, mu_harmful, tau=TAU, eps=EPS) -> float:
    """sigma_t in numpy float64, as the reference computes it on the host each step."""
    def dist(a, b):
        cos = float(a @ b) / ((np.linalg.norm(a) + eps) * (np.linalg.norm(b) + eps))
        return max(1.0 - cos, 0.0)

    z = (math.log(dist(phi, mu_harmful) + eps) - math.log(dist(phi, mu_harmless) + eps)) / tau
    return 1.0 / (1.0 + math.exp(-z))


# ============================================================================ baselines


def hf_ar_trace(model, prompt, gen, mu_p, mu_n, stops, pad_id):
    """Reference-style AR trace of ONE prompt: no KV cache, full re-run per step (on the
    model's device and dtype; hidden states go to the host in float64)."""
    import torch

    dev = model.device
    ids = torch.as_tensor(np.asarray(prompt, np.int64), device=dev)[None]
    toks, hs, sig = [], [], []
    steps_run = 0
    with torch.no_grad():
        for t in range(gen):
            out = model(input_ids=ids, output_hidden_states=True)
            steps_run += 1
            h = out.hidden_states[-1][0, -1].float().cpu().numpy().astype(np.float64)
            hs.append(h)
            phi = np.mean(hs, axis=0)
            sig.append(host_sigma(phi, mu_p[t], mu_n[t]))
            tok = int(torch.argmax(out.logits[0, -1]))
            toks.append(tok)
            if tok in stops:
                break
            ids = torch.cat([ids, torch.tensor([[tok]], device=dev)], dim=1)
    while len(toks) < gen:  # after EOS: pad tokens, the last hidden state repeats
        t = len(toks)
        toks.append(pad_id)
        hs.append(hs[-1])
        sig.append(host_sigma(np.mean(hs, axis=0), mu_p[t], mu_n[t]))
    return np.asarray(toks), np.asarray(sig), steps_run


def hf_diffusion_trace(model, prompt, gen, steps, block, mask_id, mu_p, mu_n):
    """Reference-style LLaDA trace of ONE prompt (low_confidence remasking, temperature 0),
    on the model's device and dtype."""
    import torch
    import torch.nn.functional as F

    dev = model.device
    p = len(prompt)
    x = torch.full((1, p + gen), mask_id, dtype=torch.long, device=dev)
    x[0, :p] = torch.as_tensor(np.asarray(prompt, np.int64), device=dev)
    n_blocks = gen // block
    spb = steps // n_blocks
    sig = []
    with torch.no_grad():
        for b in range(n_blocks):
            b_end = p + (b + 1) * block
            n_mask = int((x[:, p + b * block:b_end] == mask_id).sum())
            base, rem = divmod(n_mask, spb)
            n_transfer = [base + (1 if i < rem else 0) for i in range(spb)]
            for i in range(spb):
                mask_index = x == mask_id
                out = model(input_ids=x, output_hidden_states=True)
                logits = out.logits  # temperature 0: the Gumbel step returns the logits as is
                x0 = torch.argmax(logits, dim=-1)
                probs = F.softmax(logits, dim=-1)  # over the full canvas, as upstream
                x0_p = torch.gather(probs, -1, x0[..., None])[..., 0]
                x0_p[:, b_end:] = -np.inf
                x0 = torch.where(mask_index, x0, x)
                conf = torch.where(mask_index, x0_p, -np.inf)
                transfer = torch.zeros_like(x0, dtype=torch.bool)
                _, sel = torch.topk(conf[0], k=n_transfer[i])
                transfer[0, sel] = True
                x[transfer] = x0[transfer]
                phi = out.hidden_states[-1][0, p:].float().cpu().numpy().astype(
                    np.float64).mean(axis=0)
                t = b * spb + i
                sig.append(host_sigma(phi, mu_p[t], mu_n[t]))
    return x[0, p:].cpu().numpy(), np.asarray(sig)


def run_baseline(fn, prompts, repeats):
    """Time ``fn`` over every prompt (one at a time); a short untimed warm-up first."""
    t0 = time.perf_counter()
    fn(prompts[0], warmup=True)
    warm = time.perf_counter() - t0
    times, results = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = [fn(pr, warmup=False) for pr in prompts]
        times.append(time.perf_counter() - t0)
    return results, warm, times


# ============================================================================ sri_jax


def run_sri_jax_pair(gen_on, gen_off, repeats):
    """First call of each (compile + run) kept out of the medians; then on/off interleaved,
    the order alternating every repeat so drift and order effects hit both alike."""
    out = {}
    pair = (("on", gen_on), ("off", gen_off))
    for name, fn in pair:
        t0 = time.perf_counter()
        res = fn()
        out[name] = {"first_call_s": time.perf_counter() - t0, "times_s": [], "result": res}
    for r in range(repeats):
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            t0 = time.perf_counter()
            res = fn()  # generate returns numpy arrays: the device work is finished
            out[name]["times_s"].append(time.perf_counter() - t0)
            out[name]["result"] = res
    for v in out.values():
        v["median_s"] = median(v["times_s"])
        v["compile_s"] = max(v["first_call_s"] - v["median_s"], 0.0)
    return out


# ============================================================================ FLOPs


def forward_flops(sz: dict, tokens: int, head_tokens: int) -> dict:
    """FLOPs of one forward pass of one row (multiply-add = 2 FLOPs).

    matmuls   2 * tokens * N_layers * (D*H*hd + 2*D*K*hd + H*hd*D + 3*D*F)
    attention 4 * tokens^2 * H*hd * N_layers   (QK^T and PV over every key: no causal saving,
              as the diffusion model is bidirectional)
    LM head   2 * head_tokens * D * V
    Norms, RoPE, softmax and the sampler's elementwise work are not counted.
    """
    d, f, n, v = sz["hidden"], sz["intermediate"], sz["layers"], sz["vocab"]
    hd = d // sz["heads"]
    q = sz["heads"] * hd
    kv = sz["kv_heads"] * hd
    per_layer_params = d * q + 2 * d * kv + q * d + 3 * d * f
    mm = 2 * tokens * n * per_layer_params
    attn = 4 * tokens * tokens * q * n
    head = 2 * head_tokens * d * v
    return {"matmul": mm, "attention": attn, "lm_head": head, "total": mm + attn + head}


# ============================================================================ matmul peak


def matmul_peak(n: int, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    flops = 2.0 * n ** 3
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    xla = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        xla.append(time.perf_counter() - t0)
    ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
    torch.matmul(ta, tb)
    tt = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(ta, tb)
        tt.append(time.perf_counter() - t0)
    return {"n": n, "flops": flops, "xla_times_s": xla, "torch_times_s": tt,
            "xla_gflops": flops / median(xla) / 1e9, "torch_gflops": flops / median(tt) / 1e9,
            "xla_best_gflops": flops / min(xla) / 1e9,
            "torch_best_gflops": flops / min(tt) / 1e9}


# ============================================================================ main


def machine_info(torch_threads: int) -> dict:
    import jax
    import torch
    import transformers

    return {"cpu": cpu_model(), "cores": cores(), "os_cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "torch": torch.__version__, "torch_threads": torch_threads,
            "transformers": transformers.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg_start": list(os.getloadavg())}


def repo_path(arg: str) -> str:
    """``arg`` relative to the repository when it is a path inside it, else unchanged."""
    path = Path(arg)
    if path.is_absolute():
        try:
            return str(Path(os.path.normpath(path)).relative_to(REPO))
        except ValueError:
            pass
    return arg


def repo_command(argv=None) -> str:
    """The command line as run from the repository root, without this machine's absolute
    paths: the interpreter as ``python`` (or its path inside the repository, e.g.
    ``.venv/bin/python``), the script and any path arguments inside the repository relative
    to it."""
    exe = repo_path(sys.executable)
    if Path(exe).is_absolute():
        exe = "python"
    return shlex.join([exe] + [repo_path(a) for a in (sys.argv if argv is None else argv)])


def write_json(obj, out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (2 layers, short generations) for a smoke run")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed sri_jax runs per variant (median); default 3, quick 2")
    ap.add_argument("--baseline-repeats", type=int, default=1,
                    help="timed passes of the (slow) HF baselines over the batch (median)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON output (default {DEFAULT_OUT.relative_to(REPO)}; "
                         f"with --quick {QUICK_OUT})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-std", type=float, default=0.02,
                    help="std of the random weights (HF initializer_range)")
    ap.add_argument("--skip-ar", action="store_true")
    ap.add_argument("--skip-diffusion", action="store_true")
    args = ap.parse_args(argv)
    sz = dict(QUICK if args.quick else FULL)
    repeats = args.repeats or (2 if args.quick else 3)
    out_path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if repeats < 1 or args.baseline_repeats < 1:
        ap.error("--repeats and --baseline-repeats must be >= 1")

    import torch
    import transformers
    n_threads = cores()
    torch.set_num_threads(n_threads)  # XLA keeps its defaults
    transformers.utils.logging.disable_progress_bar()

    import sri_jax
    from sri_jax import Centers, Model, SamplerConfig
    from sri_jax.sampling.batching import bucket_length
    from sri_jax.sampling.autoregressive import stop_ids
    from sri_jax.weights.hf import load_hf_model

    machine = machine_info(n_threads)
    command = repo_command()
    print(f"sri_jax sampler benchmark ({'QUICK smoke sizes' if args.quick else 'full sizes'})")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} "
          f"({machine['jax_backend']}), torch {machine['torch']} ({n_threads} threads), "
          f"load avg {machine['loadavg_start'][0]:.2f}")

    rng = np.random.default_rng(args.seed)
    vocab = sz["vocab"]
    mask_id, eot_id = vocab - 1, vocab - 2
    results: dict = {"sizes": sz, "repeats": repeats, "baseline_repeats": args.baseline_repeats,
                     "seed": args.seed, "init_std": args.init_std}
    warnings_: list = []
    table = []  # (workload, variant, prompts, gen, median_s, prompts_per_s, warmup_s, ratio)

    with tempfile.TemporaryDirectory(prefix="sri_jax_bench_") as tmp:
        t0 = time.perf_counter()
        hf = build_checkpoint(sz, Path(tmp), args.seed, args.init_std)
        model = load_hf_model(tmp, dtype="float32", load_tokenizer=False, name="bench-llama")
        print(f"model: {sz['layers']} layers, hidden {sz['hidden']}, vocab {vocab}; "
              f"built + saved + loaded in {time.perf_counter() - t0:.1f}s")
        hf_bi = None if args.skip_diffusion else bidirectional_hf(Path(tmp))

    p_len = sz["prompt_len"]
    limit = model.config.max_position_embeddings
    # The matmul peak is measured at the start and at the end: a shared host that slows down
    # in between shows up as drift, and the phases (baselines first) are then not comparable.
    print("\n[matmul, start] ...", flush=True)
    mm_start = matmul_peak(sz["matmul_n"], sz["matmul_reps"])
    results["matmul_start"] = mm_start

    # ------------------------------------------------------------------ 1. AR
    if not args.skip_ar:
        g, bsz = sz["ar_gen"], sz["ar_batch"]
        prompts = rng.integers(3, vocab - 2, size=(bsz, p_len)).astype(np.int32)
        mu_p = rng.standard_normal((g, sz["hidden"])).astype(np.float32)
        mu_n = rng.standard_normal((g, sz["hidden"])).astype(np.float32)
        centers = Centers(mu_p, mu_n)
        cfg = SamplerConfig.autoregressive(gen_length=g)
        stops = set(stop_ids(model.config))
        pad_id = model.config.pad_token_id
        mp64, mn64 = mu_p.astype(np.float64), mu_n.astype(np.float64)

        def base_fn(pr, warmup):
            return hf_ar_trace(hf, pr, 2 if warmup else g, mp64, mn64, stops, pad_id)

        print(f"\n[AR] gen {g}, batch {bsz}, prompt {p_len}: HF baseline ...", flush=True)
        base_res, base_warm, base_times = run_baseline(base_fn, prompts, args.baseline_repeats)
        print("[AR] sri_jax ...", flush=True)
        sj = run_sri_jax_pair(
            lambda: sri_jax.generate(model, input_ids=prompts, cfg=cfg, centers=centers),
            lambda: sri_jax.generate(model, input_ids=prompts, cfg=cfg),
            repeats)
        b_tok = np.stack([r[0] for r in base_res])
        b_sig = np.stack([r[1] for r in base_res])
        j_tok, j_sig = sj["on"]["result"].tokens, sj["on"]["result"].sri
        rows_eq = np.all(b_tok == j_tok, axis=1)
        off_eq = bool(np.array_equal(sj["off"]["result"].tokens, j_tok))
        sig_err = float(np.max(np.abs(b_sig[rows_eq] - j_sig[rows_eq]))) if rows_eq.any() else None
        if not rows_eq.all():
            warnings_.append(f"AR: sri_jax tokens differ from the HF baseline in "
                             f"{int((~rows_eq).sum())}/{bsz} rows")
        if not off_eq:
            warnings_.append("AR: tokens with SRI on and off differ")
        base_t = median(base_times)
        base_pps = bsz / base_t
        ar = {"gen_length": g, "batch": bsz, "prompt_len": p_len,
              "padded_prompt_len": bucket_length(p_len, limit - g),
              "baseline": {"times_s": base_times, "median_s": base_t, "prompts_per_s": base_pps,
                           "warmup_s": base_warm,
                           "forward_passes": int(sum(r[2] for r in base_res))},
              "check": {"token_rows_equal": int(rows_eq.sum()), "rows": bsz,
                        "token_agreement": float(np.mean(b_tok == j_tok)),
                        "sigma_max_abs_diff": sig_err, "tokens_on_equal_off": off_eq}}
        table.append(("AR", "HF loop, no KV cache", bsz, g, base_t, base_pps, base_warm, 1.0))
        for name, label in (("on", "sri_jax, SRI on"), ("off", "sri_jax, SRI off")):
            v = sj[name]
            pps = bsz / v["median_s"]
            ar[f"sri_jax_{name}"] = {k: v[k] for k in ("times_s", "median_s", "first_call_s",
                                                       "compile_s")}
            ar[f"sri_jax_{name}"]["prompts_per_s"] = pps
            table.append(("AR", label, bsz, g, v["median_s"], pps, v["first_call_s"],
                          pps / base_pps))
        ar["speedup"] = ar["sri_jax_on"]["prompts_per_s"] / base_pps
        ar["speedup_sri_off"] = ar["sri_jax_off"]["prompts_per_s"] / base_pps
        ar["sri_overhead_pct"] = 100.0 * (sj["on"]["median_s"] - sj["off"]["median_s"]) \
            / sj["off"]["median_s"]
        ar["sri_overhead_pct_best"] = 100.0 * (min(sj["on"]["times_s"])
                                              - min(sj["off"]["times_s"])) \
            / min(sj["off"]["times_s"])
        results["ar"] = ar
        del hf

    # ------------------------------------------------------------------ 2. diffusion
    if not args.skip_diffusion:
        g, steps, block, bsz = sz["dif_gen"], sz["dif_steps"], sz["dif_block"], sz["dif_batch"]
        dmodel = Model(config=model.config.replace(causal=False, mask_token_id=mask_id,
                                                   eos_token_id=EOS, eot_token_id=eot_id),
                       params=model.params, name="bench-llama-bidirectional",
                       weight_hash=model.weight_hash)
        prompts = rng.integers(3, vocab - 2, size=(bsz, p_len)).astype(np.int32)
        mu_p = rng.standard_normal((steps, sz["hidden"])).astype(np.float32)
        mu_n = rng.standard_normal((steps, sz["hidden"])).astype(np.float32)
        centers = Centers(mu_p, mu_n)
        cfg = SamplerConfig(steps=steps, gen_length=g, block_length=block, temperature=0.0,
                            remasking="low_confidence", mode="diffusion")
        mp64, mn64 = mu_p.astype(np.float64), mu_n.astype(np.float64)

        def base_fn(pr, warmup):
            if warmup:  # one block, one step: a couple of forward passes
                return hf_diffusion_trace(hf_bi, pr, block, 1, block, mask_id, mp64, mn64)
            return hf_diffusion_trace(hf_bi, pr, g, steps, block, mask_id, mp64, mn64)

        print(f"\n[diffusion] gen {g}, steps {steps}, block {block}, batch {bsz}, "
              f"prompt {p_len}: HF baseline ...", flush=True)
        base_res, base_warm, base_times = run_baseline(base_fn, prompts, args.baseline_repeats)
        print("[diffusion] sri_jax ...", flush=True)
        sj = run_sri_jax_pair(
            lambda: sri_jax.generate(dmodel, input_ids=prompts, cfg=cfg, centers=centers),
            lambda: sri_jax.generate(dmodel, input_ids=prompts, cfg=cfg),
            repeats)
        b_tok = np.stack([r[0] for r in base_res])
        b_sig = np.stack([r[1] for r in base_res])
        j_tok, j_sig = sj["on"]["result"].tokens, sj["on"]["result"].sri
        rows_eq = np.all(b_tok == j_tok, axis=1)
        off_eq = bool(np.array_equal(sj["off"]["result"].tokens, j_tok))
        sig_err = float(np.max(np.abs(b_sig[rows_eq] - j_sig[rows_eq]))) if rows_eq.any() else None
        if not rows_eq.all():
            warnings_.append(f"diffusion: sri_jax tokens differ from the HF baseline in "
                             f"{int((~rows_eq).sum())}/{bsz} rows (token agreement "
                             f"{np.mean(b_tok == j_tok):.3f}; near-tied confidences can "
                             "commit in another order)")
        if not off_eq:
            warnings_.append("diffusion: tokens with SRI on and off differ")
        padded = bucket_length(p_len, limit - g)
        fl_sj = forward_flops(sz, padded + g, block)
        fl_base = forward_flops(sz, p_len + g, p_len + g)
        fl_useful = forward_flops(sz, p_len + g, block)
        work = bsz * steps
        base_t = median(base_times)
        base_pps = bsz / base_t
        dif = {"gen_length": g, "steps": steps, "block_length": block, "batch": bsz,
               "prompt_len": p_len, "padded_prompt_len": padded,
               "flops_per_forward_row": {"sri_jax": fl_sj, "baseline": fl_base,
                                         "useful": fl_useful},
               "baseline": {"times_s": base_times, "median_s": base_t, "prompts_per_s": base_pps,
                            "warmup_s": base_warm,
                            "gflops_per_s": work * fl_base["total"] / base_t / 1e9},
               "check": {"token_rows_equal": int(rows_eq.sum()), "rows": bsz,
                         "token_agreement": float(np.mean(b_tok == j_tok)),
                         "sigma_max_abs_diff": sig_err, "tokens_on_equal_off": off_eq}}
        table.append(("diffusion", "HF loop (LLaDA generate)", bsz, g, base_t, base_pps,
                      base_warm, 1.0))
        for name, label in (("on", "sri_jax, SRI on"), ("off", "sri_jax, SRI off")):
            v = sj[name]
            pps = bsz / v["median_s"]
            dif[f"sri_jax_{name}"] = {k: v[k] for k in ("times_s", "median_s", "first_call_s",
                                                        "compile_s")}
            dif[f"sri_jax_{name}"]["prompts_per_s"] = pps
            dif[f"sri_jax_{name}"]["gflops_per_s"] = work * fl_sj["total"] / v["median_s"] / 1e9
            dif[f"sri_jax_{name}"]["useful_gflops_per_s"] = \
                work * fl_useful["total"] / v["median_s"] / 1e9
            table.append(("diffusion", label, bsz, g, v["median_s"], pps, v["first_call_s"],
                          pps / base_pps))
        dif["speedup"] = dif["sri_jax_on"]["prompts_per_s"] / base_pps
        dif["speedup_sri_off"] = dif["sri_jax_off"]["prompts_per_s"] / base_pps
        dif["sri_overhead_pct"] = 100.0 * (sj["on"]["median_s"] - sj["off"]["median_s"]) \
            / sj["off"]["median_s"]
        dif["sri_overhead_pct_best"] = 100.0 * (min(sj["on"]["times_s"])
                                              - min(sj["off"]["times_s"])) \
            / min(sj["off"]["times_s"])
        results["diffusion"] = dif
        del hf_bi

    # ------------------------------------------------------------------ 4. matmul peak
    print("\n[matmul, end] ...", flush=True)
    mm = matmul_peak(sz["matmul_n"], sz["matmul_reps"])
    results["matmul"] = mm
    machine["loadavg_end"] = list(os.getloadavg())
    drift = 100.0 * (mm["xla_gflops"] - mm_start["xla_gflops"]) / mm_start["xla_gflops"]
    peak = max(mm["xla_gflops"], mm_start["xla_gflops"])  # the conservative denominator
    torch_peak = max(mm["torch_gflops"], mm_start["torch_gflops"])
    if abs(drift) > DRIFT_WARN_PCT:
        warnings_.append(f"the XLA matmul peak moved {drift:+.1f}% between the start and the "
                         "end of the run: the machine's speed changed, so the ratios between "
                         "phases are unreliable; rerun on a quiet machine")

    summary = {
        "ar_speedup": results.get("ar", {}).get("speedup"),
        "diffusion_speedup": results.get("diffusion", {}).get("speedup"),
        "sri_overhead_pct_ar": results.get("ar", {}).get("sri_overhead_pct"),
        "sri_overhead_pct_diffusion": results.get("diffusion", {}).get("sri_overhead_pct"),
    }
    ovh = [v for v in (summary["sri_overhead_pct_ar"], summary["sri_overhead_pct_diffusion"])
           if v is not None]
    summary["sri_overhead_pct"] = max(ovh) if ovh else None
    if "diffusion" in results:
        summary["diffusion_gflops_per_s"] = results["diffusion"]["sri_jax_on"]["gflops_per_s"]
        summary["diffusion_peak_fraction"] = summary["diffusion_gflops_per_s"] / peak
        summary["diffusion_peak_fraction_useful"] = (
            results["diffusion"]["sri_jax_on"]["useful_gflops_per_s"] / peak)
        summary["diffusion_baseline_peak_fraction_torch"] = (
            results["diffusion"]["baseline"]["gflops_per_s"] / torch_peak)
    else:
        summary["diffusion_peak_fraction"] = None
    summary["matmul_peak_drift_pct"] = drift
    summary["targets"] = TARGETS
    summary["targets_met"] = {k: (summary[k] >= v if summary[k] is not None else None)
                              for k, v in TARGETS.items()}

    doc = {**summary, "quick": bool(args.quick), "machine": machine, "command": command,
           "warnings": warnings_, **results}
    write_json(doc, out_path)

    # ------------------------------------------------------------------ table
    print()
    hdr = (f"{'workload':<10} {'variant':<26} {'prompts':>7} {'median s':>10} "
           f"{'prompts/s':>10} {'tokens/s':>9} {'first call s':>12} {'vs baseline':>11}")
    print(hdr)
    print("-" * len(hdr))
    for wl, var, n, g, t, pps, w, r in table:
        print(f"{wl:<10} {var:<26} {n:>7d} {t:>10.3f} {pps:>10.3f} {pps * g:>9.1f} "
              f"{w:>12.2f} {r:>10.2f}x")
    print("-" * len(hdr))
    print("(first call = warm-up; for sri_jax it includes XLA compilation and is excluded "
          "from the medians)")

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    best = {k: results[k]["sri_overhead_pct_best"] if k in results else None
            for k in ("ar", "diffusion")}
    print(f"SRI overhead: AR {fmt(summary['sri_overhead_pct_ar'], '+.2f')}%, diffusion "
          f"{fmt(summary['sri_overhead_pct_diffusion'], '+.2f')}%  "
          f"(medians of {repeats} interleaved runs each; best-of: AR "
          f"{fmt(best['ar'], '+.2f')}%, diffusion {fmt(best['diffusion'], '+.2f')}%)")
    print(f"matmul {mm['n']}^3 fp32, start -> end: XLA {mm_start['xla_gflops']:.1f} -> "
          f"{mm['xla_gflops']:.1f} GFLOP/s ({drift:+.1f}%), torch "
          f"{mm_start['torch_gflops']:.1f} -> {mm['torch_gflops']:.1f} GFLOP/s "
          f"(medians of {sz['matmul_reps']}; peak = the larger)")
    if "diffusion" in results:
        d = results["diffusion"]
        print(f"diffusion sampler: {d['sri_jax_on']['gflops_per_s']:.1f} GFLOP/s executed "
              f"= {summary['diffusion_peak_fraction']:.1%} of the XLA matmul peak "
              f"({summary['diffusion_peak_fraction_useful']:.1%} counting unpadded work); "
              f"HF baseline {d['baseline']['gflops_per_s']:.1f} GFLOP/s "
              f"= {summary['diffusion_baseline_peak_fraction_torch']:.1%} of the torch peak")
    for name in ("ar", "diffusion"):
        if name in results:
            c = results[name]["check"]
            print(f"check {name}: token rows equal {c['token_rows_equal']}/{c['rows']} "
                  f"(agreement {c['token_agreement']:.3f}), sigma max |diff| "
                  f"{fmt(c['sigma_max_abs_diff'], '.2e')}, SRI on/off tokens equal "
                  f"{c['tokens_on_equal_off']}")
    for k, v in TARGETS.items():
        if summary[k] is not None:
            print(f"{k}: {summary[k]:.2f}x (target >= {v:g}x: "
                  f"{'met' if summary[k] >= v else 'NOT met'})")
    for w in warnings_:
        print(f"WARNING: {w}")
    if args.quick:
        print("QUICK run: tiny sizes, numbers are not representative.")
    print(f"wrote {out_path}")
    return doc


if __name__ == "__main__":
    main()
