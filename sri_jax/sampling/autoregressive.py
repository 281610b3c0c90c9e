"""Autoregressive sampling: one batched prefill, then ONE ``lax.scan`` of cached decode steps.

Step t (t = 1..T) picks token t from the logits at the position that produces it and reads
the hidden state h_t at that same position (step 1 uses the last prompt token); the SRI
representation is the running mean phi_t = mean(h_1..h_t). A row that has emitted EOS stops
changing: its later tokens are the pad id and its later steps repeat the last hidden state,
as the reference does, so every trace has exactly T steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..models.config import ModelConfig
from ..models.decoder import KVCache, forward
from .common import Probe, Reads, StepRecord, project, sample_token, sri_update
from .config import SamplerConfig


class ARState(NamedTuple):
    tokens: jax.Array   # [B, G] int32
    done: jax.Array     # [B] bool
    logits: jax.Array   # [B, V] fp32, at the position producing the next token
    h_cur: jax.Array    # [B, D] fp32 hidden at that position
    h_last: jax.Array   # [B, D] fp32 hidden used at the previous step
    h_sum: jax.Array    # [B, D] fp32 running sum of used hidden states
    cache: KVCache
    key: jax.Array
    sri: jax.Array      # [B, T] fp32


def stop_ids(mcfg: ModelConfig):
    return tuple(sorted({t for t in (mcfg.eos_token_id, mcfg.eot_token_id) if t is not None}))


def _hidden(out, hidden_layer):
    h = out.hidden if hidden_layer is None else out.layer_hidden
    return h[:, -1].astype(jnp.float32)


def pick(mcfg: ModelConfig, scfg: SamplerConfig, probe: Probe, state: ARState, t,
         record_snapshots: bool):
    """Choose token t, update done/hidden bookkeeping and sigma_t (no forward pass)."""
    key, sub = jax.random.split(state.key)
    tok = sample_token(state.logits, sub, scfg.temperature, scfg.top_k, scfg.top_p)
    pad = mcfg.pad_token_id if mcfg.pad_token_id is not None else mcfg.eos_token_id
    tok = jnp.where(state.done, pad, tok)
    h = jnp.where(state.done[:, None], state.h_last, state.h_cur)
    h_sum = state.h_sum + h
    phi = h_sum / (t + 1).astype(jnp.float32)
    done = state.done
    for s in stop_ids(mcfg):
        done = done | (tok == s)
    tokens = state.tokens.at[:, t].set(tok)
    sri = sri_update(state.sri, probe, phi, t, scfg.tau)
    rec = StepRecord(phi, project(probe, phi), tokens if record_snapshots else None)
    return state._replace(tokens=tokens, done=done, h_last=h, h_sum=h_sum, key=key,
                          sri=sri), tok, rec


def ar_sample(params, mcfg: ModelConfig, scfg: SamplerConfig, input_ids, attention_mask,
              key, probe: Probe, *, reads: Reads = Reads()):
    """The fused AR sampler. Returns (tokens [B, G], sri [B, T], StepRecord of [B, T, ...])."""
    hidden_layer, return_activations, record_snapshots = reads
    b, p = input_ids.shape
    g = scfg.gen_length
    dtype = params["embed"].dtype
    kmask = jnp.concatenate([attention_mask.astype(jnp.int32), jnp.ones((b, g), jnp.int32)], 1)
    cache = KVCache.zeros(mcfg, b, p + g, dtype)
    out = forward(params, mcfg, input_ids, attention_mask=kmask, cache=cache, cache_index=0,
                  hidden_layer=hidden_layer, logits_start=p - 1)
    h0 = _hidden(out, hidden_layer)
    d = h0.shape[-1]
    state = ARState(jnp.zeros((b, g), jnp.int32), jnp.zeros((b,), bool), out.logits[:, -1],
                    h0, jnp.zeros((b, d), jnp.float32), jnp.zeros((b, d), jnp.float32),
                    out.cache, key, jnp.zeros((b, scfg.steps), jnp.float32))

    def keep(rec):
        return rec if return_activations else rec._replace(phi=None)

    def body(state, t):
        state, tok, rec = pick(mcfg, scfg, probe, state, t, record_snapshots)
        out = forward(params, mcfg, tok[:, None], attention_mask=kmask, cache=state.cache,
                      cache_index=p + t, hidden_layer=hidden_layer)
        state = state._replace(logits=out.logits[:, -1], h_cur=_hidden(out, hidden_layer),
                               cache=out.cache)
        return state, keep(rec)

    state, recs = jax.lax.scan(body, state, jnp.arange(g - 1))
    state, _, last = pick(mcfg, scfg, probe, state, jnp.asarray(g - 1), record_snapshots)
    recs = jax.tree.map(lambda a, l: jnp.concatenate([a, l[None]], 0), recs, keep(last))
    recs = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), recs)  # [B, T, ...]
    return state.tokens, state.sri, recs
