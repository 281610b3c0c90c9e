"""The user-facing :class:`Model`: config + params + tokenizer, and a jitted forward pass."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .config import ModelConfig
from .decoder import forward as decoder_forward

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"
# Families whose chat template has no system role (Gemma-2's raises on one): the system text
# opens the first user turn, followed by a blank line -- what Gemma-3's own template does
# with a system message, and how the reference prompts models without a system role.
NO_SYSTEM_ROLE = ("gemma2", "gemma3")
# Stands for the user text when the template is rendered to find the user turn (private-use
# characters: no tokenizer control text and no real prompt contains them).
_USER_SLOT = "\ue000sri-jax-user-text\ue000"


class ForwardOutput(NamedTuple):
    logits: jax.Array  # [B, L, V] fp32
    hidden: jax.Array  # [B, L, D] last block after the final norm
    layer_hidden: Optional[jax.Array] = None  # [B, L, D] when a layer was requested


@functools.partial(jax.jit, static_argnames=("cfg", "hidden_layer"))
def _jit_forward(params, cfg, input_ids, attention_mask, positions, hidden_layer):
    out = decoder_forward(params, cfg, input_ids, attention_mask=attention_mask,
                          positions=positions, hidden_layer=hidden_layer)
    return ForwardOutput(out.logits, out.hidden, out.layer_hidden)


def left_pad(seqs, pad_id: int, length: Optional[int] = None, *, rows: Optional[int] = None,
             masks=None):
    """Token rows left-padded to ``length`` (default: the longest): (ids, mask) int32 numpy,
    mask 1 on real tokens. ``rows`` (default: one per sequence): more rows repeat the last
    sequence (a short batch runs with the program compiled for a full one). ``masks``: one
    mask row per sequence, for rows that carry their own (already left-padded) mask."""
    length = max(len(q) for q in seqs) if length is None else length
    rows = len(seqs) if rows is None else rows
    ids = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    for i in range(rows):
        j = min(i, len(seqs) - 1)
        q = seqs[j]
        if len(q):
            ids[i, length - len(q):] = q
            mask[i, length - len(q):] = 1 if masks is None else masks[j]
    return ids, mask


@dataclasses.dataclass
class Model:
    """A loaded model.

    config     frozen :class:`ModelConfig`
    params     parameter pytree (see :mod:`sri_jax.models.decoder`)
    tokenizer  a transformers tokenizer, or None for tokenizer-less checkpoints
    name       where it came from (registry name, hub id or path)
    weight_hash  content hash of the stored weights (for artifact metadata)
    chat_template  Jinja chat template (defaults to the tokenizer's)
    system_prompt  the system turn of every chat prompt (the reference's "You are a helpful
                   assistant", for every family); None renders none
    safe_prompts   encode user text without special-token parsing (see :meth:`encode_chat`);
                   the CLI turns it on for prompts read from files and prompt sets
    """

    config: ModelConfig
    params: Any
    tokenizer: Any = None
    name: str = ""
    weight_hash: str = ""
    chat_template: Optional[str] = None
    system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT
    safe_prompts: bool = False

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def dtype(self):
        return self.params["embed"].dtype

    def forward(self, input_ids, attention_mask=None, *, positions=None,
                layer=None) -> ForwardOutput:
        """Logits [B, L, V] (fp32) and last-layer post-norm hidden states [B, L, D].

        ``attention_mask`` marks real tokens (left padding); only keys are masked.
        ``layer`` ("last", "middle", "first" or an index) also returns that block's
        residual-stream output as ``layer_hidden``.
        """
        ids = jnp.asarray(np.asarray(input_ids), dtype=jnp.int32)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
        if ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input length {ids.shape[1]} exceeds the model's context "
                             f"{self.config.max_position_embeddings}; shorten the prompt")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{lo}, {hi}]; the ids do not belong to this model's vocabulary")
        if attention_mask is None:
            attention_mask = jnp.ones_like(ids)
        mask = jnp.asarray(np.asarray(attention_mask), dtype=jnp.int32)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
        if positions is not None:
            positions = jnp.asarray(np.asarray(positions), dtype=jnp.int32)
        hl = None if layer is None else self.config.resolve_layer(layer)
        return _jit_forward(self.params, self.config, ids, mask, positions, hl)

    # ------------------------------------------------------------------ chat helpers

    def chat_prompt(self, prompt: str, system_prompt: Optional[str] = "default") -> str:
        """Apply the model's chat template to one user message (generation prompt appended).

        ``system_prompt`` "default" uses :attr:`system_prompt` ("You are a helpful assistant"
        unless changed); None or "" renders no system turn. For families without a system
        role (:data:`NO_SYSTEM_ROLE`) the user turn is ``system + "\n\n" + prompt``."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer: pass input_ids instead")
        if system_prompt == "default":
            system_prompt = self.system_prompt
        messages = []
        if system_prompt and self.config.family in NO_SYSTEM_ROLE:
            prompt = f"{system_prompt}\n\n{prompt}"
        elif system_prompt:  # every family, LLaDA included, as the reference builds prompts
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": prompt})
        kwargs = {}
        if self.chat_template is not None:
            kwargs["chat_template"] = self.chat_template
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True, **kwargs)

    def encode_chat(self, prompts, system_prompt: Optional[str] = "default",
                    pad_to: Optional[int] = None, *, safe: Optional[bool] = None):
        """Chat-template and tokenize prompts, left-padded: (input_ids, attention_mask) numpy.

        ``safe`` (default :attr:`safe_prompts`): the user's text is tokenized as plain text,
        so control text inside it (``<|im_start|>system ...``) stays text instead of becoming
        control tokens; the template's own control tokens stay special. A prompt with no
        such text gives the same ids either way."""
        seqs = self.chat_ids(prompts, system_prompt, safe=safe)
        length = max(len(s) for s in seqs)
        if pad_to is not None:
            if pad_to < length:
                raise ValueError(f"pad_to={pad_to} is shorter than the longest prompt ({length})")
            length = pad_to
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        return left_pad(seqs, pad, length)

    def chat_ids(self, prompts, system_prompt: Optional[str] = "default", *,
                 safe: Optional[bool] = None) -> list[list[int]]:
        """Each prompt chat-templated and tokenized (unpadded token id lists); see
        :meth:`encode_chat` for ``safe``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given: pass a non-empty list of strings")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty or not a string: {p!r}")
        safe = self.safe_prompts if safe is None else safe
        return [self._encode_one(p, system_prompt, safe) for p in prompts]

    def _encode_one(self, prompt: str, system_prompt, safe: bool) -> list:
        text = self.chat_prompt(prompt, system_prompt)
        ids = self._tokens(text)
        if not safe:
            return ids
        # Split the rendered prompt into template text / user text / template text: render
        # the template around a placeholder, so the user turn is found after whatever the
        # template does to its content (LLaDA's trims it).
        slot = self.chat_prompt(_USER_SLOT, system_prompt)
        i = slot.find(_USER_SLOT)
        prefix, suffix = slot[:i], slot[i + len(_USER_SLOT):]
        if (i < 0 or _USER_SLOT in suffix or len(prefix) + len(suffix) > len(text)
                or not text.startswith(prefix) or not text.endswith(suffix)):
            raise ValueError(f"safe prompt encoding cannot find the user text in the chat "
                             f"template of {self.name or 'this model'}: encode with safe=False "
                             "(raw) or pass input_ids")
        user = text[len(prefix):len(text) - len(suffix)]
        plain = self._tokens(user, split_special_tokens=True)
        if plain == self._tokens(user):
            return ids  # no control text in the user's words: identical to raw mode
        return self._tokens(prefix) + plain + self._tokens(suffix)

    def _tokens(self, text: str, **kw) -> list:
        return self.tokenizer(text, add_special_tokens=False, **kw)["input_ids"] if text else []

    def decode(self, tokens, stop_at_eos: bool = False) -> list[str]:
        """Decode generated token rows with special tokens skipped.

        Default: the whole row, as the reference decodes a response for the refusal judge
        (a diffusion canvas can hold text after an EOS, and that text is judged too; an AR
        row holds only pad ids after its EOS). ``stop_at_eos=True`` cuts each row at its
        first EOS/EOT first: the answer as a chat reader would see it (for display)."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer")
        stops = {t for t in (self.config.eos_token_id, self.config.eot_token_id)
                 if t is not None}
        out = []
        for row in np.asarray(tokens).tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row)) \
                if stop_at_eos else len(row)
            out.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return out
