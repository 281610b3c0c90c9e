"""GCG (Zou et al. 2023): greedy coordinate gradient search for an adversarial suffix, in JAX.

Each row is ``[chat template | prompt | suffix (S tokens) | rest of template, generation
prompt | target]`` (left-padded); the loss of a suffix is the mean cross-entropy of the
target tokens, summed over the prompts (one prompt: the individual attack; several: the
universal one). One compiled step:

1. the gradient of the loss with respect to the one-hot suffix [S, V] (the suffix enters the
   model as extra rows of the embedding table, ``onehot @ E``, so the decoder is used as it
   is and any scaling it applies to embeddings applies to them too);
2. per position the ``top_k`` tokens with the most negative gradient, among the allowed ones;
3. ``num_candidates`` random single-token substitutions (position and top-k entry drawn from
   the step's key), all evaluated in batched forward passes (``eval_chunk`` candidates x
   prompts rows at a time);

then on the host the lowest-loss candidate that survives as text becomes the suffix (as
upstream, even if worse than the current one; the best suffix seen is kept): its text
re-encodes alone to the same ids, and for every prompt the chat prompt of
``prompt + separator + text``, encoded as the samplers encode prompts (``Model.chat_ids``,
with the model's ``safe_prompts``), is exactly the optimised row (:func:`suffix_in_context`):
the attack sends text, and a tokenizer may merge across the prompt/suffix or suffix/end of
turn boundary.
The key of step i is ``fold_in(key(seed), i)``: a run is deterministic for a seed, and a run
resumed from its saved state (``out_dir``, every ``checkpoint_every`` steps, an artifact of
kind "gcg") continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .artifacts import ArtifactError, atomic_directory, read_json, write_json
from .models.decoder import forward

STATE_FILE = "gcg.json"
_SLOT = "\x00GCG_SLOT\x00"


@dataclasses.dataclass(frozen=True)
class GCGConfig:
    """suffix_length S, top_k tokens per position, num_candidates single swaps per step
    (a multiple of eval_chunk, the candidates per batched forward), steps, ascii_only
    (allowed tokens decode to printable ASCII), init (the start suffix text; default
    ``"!"`` tokens as upstream, else the first allowed token), seed, checkpoint_every,
    separator (the text between the prompt and the suffix, part of the prompt's row and of
    what an attack sends: ``prompt + separator + suffix``; "" appends the suffix directly,
    as byte-level BPE suffixes that start with a space token need; " " for tokenizers whose
    decoded suffix starts with a word)."""

    suffix_length: int = 20
    top_k: int = 256
    num_candidates: int = 512
    eval_chunk: int = 64
    steps: int = 500
    ascii_only: bool = True
    init: Optional[str] = None
    seed: int = 0
    checkpoint_every: int = 10
    separator: str = ""

    def __post_init__(self):
        errs = [f"{k} must be >= 1, got {getattr(self, k)}" for k in
                ("suffix_length", "top_k", "num_candidates", "eval_chunk", "steps",
                 "checkpoint_every") if getattr(self, k) < 1]
        if not errs and self.num_candidates % self.eval_chunk:
            errs.append(f"num_candidates {self.num_candidates} must be a multiple of "
                        f"eval_chunk {self.eval_chunk}")
        if errs:
            raise ValueError("invalid GCGConfig: " + "; ".join(errs))

    def problem_dict(self) -> dict:
        """What must match for a saved run to be resumed (everything but steps and the
        checkpoint interval)."""
        d = dataclasses.asdict(self)
        d.pop("steps")
        d.pop("checkpoint_every")
        return d


class GCGProblem(NamedTuple):
    """Device arrays of the objective: rows [P, L] with the suffix slots at ``slots`` [P, S];
    ``labels`` / ``weights`` [P, W]: the target ids in the last W positions."""

    ids: jax.Array
    mask: jax.Array
    slots: jax.Array
    labels: jax.Array
    weights: jax.Array


@dataclasses.dataclass
class GCGResult:
    suffix_ids: list        # the current suffix after the last step
    suffix: str
    loss: float
    best_ids: list          # the lowest-loss suffix seen (initial one included)
    best_suffix: str
    best_loss: float
    history: list           # per step: {"loss": chosen candidate's loss, "ids": its ids}
    initial_loss: float
    separator: str = ""     # what an attack sends: prompt + separator + suffix


# ------------------------------------------------------------------ the objective (pure)

def row_losses(params, mcfg, ids, mask, labels, weights):
    """Mean CE of the target tokens per row [N] (the target sits in the last W positions)."""
    w = labels.shape[1]
    length = ids.shape[1]
    out = forward(params, mcfg, ids, attention_mask=mask, logits_start=length - w - 1)
    logits = out.logits[:, :w, :mcfg.vocab_size]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights, 1) / jnp.sum(weights, 1)


def onehot_loss(onehot, params, mcfg, prob: GCGProblem):
    """The summed target loss with the suffix given as a (relaxed) one-hot [S, V]: the
    suffix embeddings ``onehot @ E`` are appended to the embedding table and the slots
    point at them."""
    embed = params["embed"]
    v, s = embed.shape[0], onehot.shape[0]
    sfx = (onehot.astype(jnp.float32) @ embed.astype(jnp.float32)).astype(embed.dtype)
    p = prob.ids.shape[0]
    ids = prob.ids.at[jnp.arange(p)[:, None], prob.slots].set(v + jnp.arange(s)[None, :])
    extended = {**params, "embed": jnp.concatenate([embed, sfx], 0)}
    return jnp.sum(row_losses(extended, mcfg, ids, prob.mask, prob.labels, prob.weights))


def candidate_losses(params, mcfg, prob: GCGProblem, cands, chunk: int):
    """Summed target loss of every candidate suffix [B, S] -> [B], ``chunk`` candidates
    (times P prompts rows) per forward pass."""
    b, s = cands.shape
    p, length = prob.ids.shape

    def one(c):
        n = c.shape[0]
        ids = jnp.broadcast_to(prob.ids, (n, p, length)).at[
            jnp.arange(n)[:, None, None], jnp.arange(p)[None, :, None],
            prob.slots[None]].set(c[:, None, :])
        tile = lambda a: jnp.broadcast_to(a, (n,) + a.shape).reshape(n * p, -1)  # noqa: E731
        loss = row_losses(params, mcfg, ids.reshape(n * p, length), tile(prob.mask),
                          tile(prob.labels), tile(prob.weights))
        return loss.reshape(n, p).sum(1)

    return jax.lax.map(one, cands.reshape(b // chunk, chunk, s)).reshape(b)


@functools.partial(jax.jit, static_argnames=("mcfg", "top_k", "num_candidates", "chunk"))
def gcg_step(params, prob: GCGProblem, suffix, allowed, key, *, mcfg, top_k: int,
             num_candidates: int, chunk: int):
    """One GCG step: (loss of ``suffix``, candidates [B, S], their losses [B])."""
    v = params["embed"].shape[0]
    onehot = jax.nn.one_hot(suffix, v, dtype=jnp.float32)
    loss, grad = jax.value_and_grad(onehot_loss)(onehot, params, mcfg, prob)
    grad = jnp.where(allowed[None, :], grad, jnp.inf)
    top = jax.lax.top_k(-grad, top_k)[1]  # [S, K]
    k_pos, k_tok = jax.random.split(key)
    s = suffix.shape[0]
    pos = jax.random.randint(k_pos, (num_candidates,), 0, s)
    pick = jax.random.randint(k_tok, (num_candidates,), 0, top_k)
    cands = jnp.broadcast_to(suffix, (num_candidates, s)).at[
        jnp.arange(num_candidates), pos].set(top[pos, pick])
    return loss, cands, candidate_losses(params, mcfg, prob, cands, chunk)


# ------------------------------------------------------------------ tokens

def round_trips(tokenizer, ids) -> bool:
    """Whether ``ids`` decode to a text that encodes back to exactly ``ids``."""
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids)
    return tokenizer(text, add_special_tokens=False)["input_ids"] == ids


def allowed_tokens(model, ascii_only: bool = True) -> np.ndarray:
    """[V] bool: tokens GCG may place in the suffix: not special (tokenizer's special and
    added tokens, the model's pad/eos/eot/bos/mask ids), inside the tokenizer's vocabulary,
    decoding to a non-empty text (printable ASCII with ``ascii_only``) that encodes back to
    the same single id."""
    tok, mcfg = model.tokenizer, model.config
    special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
    special |= {getattr(mcfg, k, None) for k in ("pad_token_id", "eos_token_id", "eot_token_id",
                                                  "bos_token_id", "mask_token_id")}
    ok = np.zeros(mcfg.vocab_size, bool)
    for i in range(min(len(tok), mcfg.vocab_size)):
        if i in special:
            continue
        text = tok.decode([i])
        if not text.strip() or (ascii_only and not (text.isascii() and text.isprintable())):
            continue
        ok[i] = tok(text, add_special_tokens=False)["input_ids"] == [i]
    if not ok.any():
        raise ValueError(f"no token of {model.name or 'the model'} is allowed in a GCG suffix")
    return ok


def row_parts(model, prompt: str, separator: str = "",
              system_prompt: Optional[str] = "default") -> tuple:
    """(before, after): the ids of a row around its suffix: the chat template's head and
    ``prompt + separator`` (the template's text and the user's tokenized apart, the user's
    as plain text), then the end of turn and generation prompt."""
    text = model.chat_prompt(prompt + separator + _SLOT, system_prompt)
    i = text.find(_SLOT)
    if i < 0:
        raise ValueError("the chat template dropped the suffix slot; GCG cannot place "
                         "the suffix")
    head = model.chat_prompt(_SLOT, system_prompt)
    j = head.find(_SLOT)
    before = model._tokens(head[:j]) + model._tokens(text[j:i], split_special_tokens=True)
    return before, model._tokens(text[i + len(_SLOT):])


def suffix_in_context(model, prompts: Sequence[str], suffix: str, *, separator: str = "",
                      system_prompt: Optional[str] = "default", ids=None,
                      parts=None) -> list:
    """Per prompt: whether the chat prompt of ``prompt + separator + suffix``, encoded as
    the samplers encode prompts (``Model.chat_ids``, with the model's ``safe_prompts``),
    is exactly the row GCG optimises: the prompt part, the suffix ids (``ids``; default the
    suffix encoded alone), the end part (``parts``: :func:`row_parts` of each prompt). A
    False means the model sees other tokens than the optimised ones (a merge across the
    prompt/suffix or suffix/end-of-turn boundary)."""
    ids = (model.tokenizer(suffix, add_special_tokens=False)["input_ids"] if ids is None
           else [int(i) for i in ids])
    if parts is None:
        parts = [row_parts(model, p, separator, system_prompt) for p in prompts]
    return [model.chat_ids([p + separator + suffix], system_prompt)[0] == b + ids + a
            for p, (b, a) in zip(prompts, parts)]


def build_problem(model, prompts: Sequence[str], targets: Sequence[str], suffix_length: int,
                  system_prompt: Optional[str] = "default", separator: str = "") -> GCGProblem:
    """The rows of the objective for ``prompts`` (user text; the suffix follows
    ``prompt + separator``) and their ``targets``."""
    if not model.config.causal:
        raise ValueError(f"GCG optimises the continuation of an autoregressive model; "
                         f"{model.name or 'this model'} is a diffusion model")
    if model.tokenizer is None:
        raise ValueError(f"{model.name or 'the model'} has no tokenizer")
    prompts, targets = list(prompts), list(targets)
    if not prompts or len(prompts) != len(targets):
        raise ValueError(f"give one target per prompt (got {len(prompts)} prompts, "
                         f"{len(targets)} targets)")
    rows = []
    for p, t in zip(prompts, targets):
        if not p.strip() or not t.strip():
            raise ValueError("prompts and targets must be non-empty text")
        rows.append((*row_parts(model, p, separator, system_prompt),
                     model._tokens(t, split_special_tokens=True)))
    length = max(len(b) + suffix_length + len(a) + len(t) for b, a, t in rows)
    w = max(len(t) for _, _, t in rows)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    n = len(rows)
    ids = np.full((n, length), pad, np.int32)
    mask = np.zeros((n, length), np.int32)
    slots = np.zeros((n, suffix_length), np.int32)
    labels = np.full((n, w), pad, np.int32)
    weights = np.zeros((n, w), np.float32)
    for r, (b, a, t) in enumerate(rows):
        seq = b + [pad] * suffix_length + a + t
        start = length - len(seq)
        ids[r, start:] = seq
        mask[r, start:] = 1
        slots[r] = start + len(b) + np.arange(suffix_length)
        labels[r, w - len(t):] = t
        weights[r, w - len(t):] = 1.0
    return GCGProblem(*map(jnp.asarray, (ids, mask, slots, labels, weights)))


def initial_suffix(model, cfg: GCGConfig, allowed: np.ndarray) -> list:
    """``cfg.init`` tokenized (it must give suffix_length allowed tokens), else suffix_length
    copies of the token for " !" or "!" (upstream's start), else of the first allowed one."""
    tok = model.tokenizer
    if cfg.init is not None:
        ids = tok(cfg.init, add_special_tokens=False)["input_ids"]
        if len(ids) != cfg.suffix_length or not all(allowed[i] for i in ids):
            raise ValueError(f"init {cfg.init!r} gives {len(ids)} tokens "
                             f"({'some not allowed' if ids else 'none'}); give a text of "
                             f"exactly {cfg.suffix_length} allowed tokens")
        return ids
    for text in (" !", "!"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and allowed[ids[0]]:
            return ids * cfg.suffix_length
    return [int(np.argmax(allowed))] * cfg.suffix_length


# ------------------------------------------------------------------ the run

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _open_state(out_dir, ident: dict) -> Optional[dict]:
    """The saved state of this problem in ``out_dir`` (None: none saved); a state of another
    problem is an error."""
    if out_dir is None or not (Path(out_dir) / STATE_FILE).is_file():
        return None
    state = read_json(Path(out_dir) / STATE_FILE, "GCG state", "delete the folder to start over")
    diff = sorted(k for k in ident if state.get("ident", {}).get(k) != ident[k])
    if diff:
        raise ArtifactError(f"{out_dir} holds a GCG run of another problem (differs in "
                            f"{', '.join(diff)}); use another --out folder")
    return state


def _save_state(out_dir, state: dict) -> None:
    if out_dir is None:
        return
    with atomic_directory(out_dir, "gcg", overwrite=True) as tmp:
        write_json(tmp / STATE_FILE, state, indent=1)


def _advance(state: dict, accept, loss: float, cands: np.ndarray, losses: np.ndarray) -> float:
    """Take the lowest-loss candidate that ``accept`` takes (none: keep the suffix), record
    it in ``state`` (history, best) and return its loss."""
    if state["initial_loss"] is None:
        state["initial_loss"] = state["best_loss"] = loss
    chosen = next((j for j in np.argsort(losses, kind="stable") if accept(cands[j])), None)
    if chosen is None:  # no candidate survives as text: keep the suffix
        ids, new = state["suffix_ids"], loss
    else:
        ids, new = cands[chosen].tolist(), float(losses[chosen])
    state["suffix_ids"] = ids
    state["history"].append({"loss": new, "ids": ids})
    if new < state["best_loss"]:
        state["best_loss"], state["best_ids"] = new, ids
    return new


def _survivor(model, prompts: list, cfg: GCGConfig, system_prompt):
    """(accept, check_initial): whether a suffix's ids survive as text (they re-encode alone
    and in every prompt's chat prompt, :func:`suffix_in_context`), and a check of the
    initial suffix that raises a ValueError naming the first prompt it fails in."""
    tok, sep = model.tokenizer, cfg.separator
    parts = [row_parts(model, p, sep, system_prompt) for p in prompts]

    def in_context(ids):
        return suffix_in_context(model, prompts, tok.decode([int(i) for i in ids]),
                                 separator=sep, system_prompt=system_prompt, ids=ids,
                                 parts=parts)

    def check_initial(ids):
        if not round_trips(tok, ids):
            raise ValueError(f"the initial GCG suffix {tok.decode(ids)!r} does not encode back "
                             "to its own ids; give another GCGConfig.init")
        k = next((k for k, ok in enumerate(in_context(ids)) if not ok), None)
        if k is not None:
            raise ValueError(
                f"the initial GCG suffix {tok.decode(ids)!r} does not survive in context: for "
                f"prompt {k} ({prompts[k][:60]!r}) the chat prompt of prompt + separator "
                f"{sep!r} + suffix encodes to other ids than the optimised row (the tokenizer "
                "merges across the boundary); give another GCGConfig.init or "
                "GCGConfig.separator (e.g. ' '), or end the prompt differently")

    return (lambda ids: round_trips(tok, ids) and all(in_context(ids))), check_initial


def run_gcg(model, prompts: Sequence[str], targets: Sequence[str], cfg: GCGConfig = GCGConfig(),
            *, out_dir=None, progress: bool = True, system_prompt: Optional[str] = "default",
            prompt_ids: Optional[Sequence[str]] = None,
            max_seconds: Optional[float] = None) -> GCGResult:
    """Optimise one suffix for ``prompts`` -> ``targets`` (summed loss: universal over
    several prompts). With ``out_dir`` the state is saved every ``cfg.checkpoint_every``
    steps and at the end (artifact kind "gcg"), and a run finds its saved state there and
    continues from it (the same model, prompts, targets and settings; ``steps`` may grow).
    ``max_seconds``: a time budget; the run stops (and saves) after the step that passes
    it, and a rerun continues exactly where it stopped. An initial suffix that does not
    survive as text after every prompt (see :func:`suffix_in_context`) is a ValueError."""
    from tqdm.auto import tqdm

    prompts, targets = list(prompts), list(targets)
    prob = build_problem(model, prompts, targets, cfg.suffix_length, system_prompt,
                         cfg.separator)
    allowed = allowed_tokens(model, cfg.ascii_only)
    if cfg.top_k > int(allowed.sum()):
        raise ValueError(f"top_k {cfg.top_k} exceeds the {int(allowed.sum())} allowed tokens")
    tok = model.tokenizer
    ident = {"model": model.name, "weight_hash": model.weight_hash,
             "config": cfg.problem_dict(), "system_prompt": system_prompt,
             "safe_prompts": bool(model.safe_prompts),
             "prompts": _digest(prompts), "targets": _digest(targets)}
    state = _open_state(out_dir, ident)
    accept, check_initial = _survivor(model, prompts, cfg, system_prompt)
    if state is None:
        init = initial_suffix(model, cfg, allowed)
        check_initial(init)
        state = {"ident": ident, "step": 0, "suffix_ids": init, "history": [],
                 "best_ids": init, "best_loss": None, "initial_loss": None,
                 "prompts": prompts, "targets": targets,
                 "prompt_ids": list(prompt_ids) if prompt_ids is not None else None}
    allowed_d = jnp.asarray(allowed)
    base = jax.random.key(cfg.seed)
    run = functools.partial(gcg_step, mcfg=model.config, top_k=cfg.top_k,
                            num_candidates=cfg.num_candidates, chunk=cfg.eval_chunk)
    t0 = time.perf_counter()
    with tqdm(total=cfg.steps, initial=min(state["step"], cfg.steps), desc="gcg",
              disable=not progress) as bar:
        for i in range(state["step"], cfg.steps):
            cur = jnp.asarray(state["suffix_ids"], jnp.int32)
            loss, cands, losses = run(model.params, prob, cur, allowed_d,
                                      jax.random.fold_in(base, i))
            new = _advance(state, accept, float(loss), np.asarray(cands), np.asarray(losses))
            state["step"] = i + 1
            bar.update(1)
            bar.set_postfix(loss=f"{new:.3f}", best=f"{state['best_loss']:.3f}")
            if state["step"] % cfg.checkpoint_every == 0:
                _save_state(out_dir, state)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    _save_state(out_dir, state)
    last = state["history"][-1]["loss"] if state["history"] else state["initial_loss"]
    return GCGResult(state["suffix_ids"], tok.decode(state["suffix_ids"]), last,
                     state["best_ids"], tok.decode(state["best_ids"]), state["best_loss"],
                     state["history"], state["initial_loss"], cfg.separator)
