"""Pieces shared by the fused samplers: the SRI probe inside the loop, token choice, pooling."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..sri.signal import sri_step


class Probe(NamedTuple):
    """Device arrays the loop reads the SRI signal with (None fields are switched off)."""

    mu_harmless: Optional[jax.Array] = None  # [T, D] fp32
    mu_harmful: Optional[jax.Array] = None   # [T, D] fp32
    direction: Optional[jax.Array] = None    # [D] unit vector for phi . r_hat


class Reads(NamedTuple):
    """What a fused sampler reads and records besides tokens and SRI (static, hashable): the
    layer whose output is pooled (None: the final-norm output), phi per step
    (``activations``) and the response after every step (``snapshots``)."""

    hidden_layer: Optional[int] = None
    activations: bool = False
    snapshots: bool = False


class StepRecord(NamedTuple):
    """What one step emits (stacked by the scan along a leading T axis)."""

    phi: Optional[jax.Array]         # [B, D] pooled activation (return_activations)
    projection: Optional[jax.Array]  # [B] phi . r_hat
    snapshot: Optional[jax.Array]    # [B, G] response tokens after this step


def sri_update(sri, probe: Probe, phi, t, tau):
    """Write sigma_t for every row into the carried [B, T] buffer."""
    if probe.mu_harmless is None:
        return sri
    sigma = sri_step(phi, probe.mu_harmless[t], probe.mu_harmful[t], tau)
    return sri.at[:, t].set(sigma)


def project(probe: Probe, phi):
    return None if probe.direction is None else phi @ probe.direction


class StepNoise(NamedTuple):
    """The uniform random numbers in (0, 1) one diffusion step consumes (None: not used).

    tok  [B, N, V]: token choice at temperature > 0 (Gumbel-max with g = -log(-log u), the
         same race as upstream's ``exp(logits) / (-log u)^T`` and torch's multinomial
         ``p / E`` with E = -log u);
    pos  [B, N]:    position choice (LLaDA ``random`` remasking; Dream ``origin`` reveals and
         ``alg_temp`` sampling).
    The fused samplers draw them from the key each step; tests pass them in explicitly.
    """

    tok: Optional[jax.Array] = None
    pos: Optional[jax.Array] = None


def uniforms(key, shape):
    """u ~ U(0, 1) in fp32, never exactly 0 (so -log u is finite)."""
    return jax.random.uniform(key, shape, jnp.float32, minval=jnp.finfo(jnp.float32).tiny)


def draw_noise(k_tok, k_pos, tok_shape, tok: bool, pos: bool) -> StepNoise:
    """One step's :class:`StepNoise` from two keys; only the parts the step uses."""
    return StepNoise(uniforms(k_tok, tok_shape) if tok else None,
                     uniforms(k_pos, tok_shape[:-1]) if pos else None)


def gumbel(u):
    """Standard Gumbel noise from uniforms: -log(-log u)."""
    return -jnp.log(-jnp.log(u))


def gumbel_argmax(logits, u, temperature: float):
    """argmax(logits / T + g) == argmax(exp(logits) / (-log u)^T), the upstream form,
    computed in log space in fp32 (no exp overflow, so float64 is not needed). ``u`` are
    the uniforms (unused at T = 0: plain argmax)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    return jnp.argmax(logits + temperature * gumbel(u), axis=-1)


def filter_logits(logits, top_k: Optional[int], top_p: Optional[float]):
    """Top-k then top-p (nucleus) filtering over the last axis of logits of any rank (HF's
    rule: drop the tokens whose ascending cumulative probability is <= 1 - top_p, always
    keep the top one); dropped entries become the fp32 minimum."""
    neg = jnp.finfo(jnp.float32).min
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(logits, axis=-1)  # ascending
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = cum <= 1.0 - top_p
        remove_sorted = remove_sorted.at[..., -1].set(False)  # keep at least the top token
        remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(remove, neg, logits)
    return logits


def sample_token(logits, key, temperature: float, top_k=None, top_p=None):
    """Greedy at temperature 0, else categorical over filtered logits / temperature."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_k, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def masked_mean(h, weights):
    """Mean of h [B, L, D] over L with weights [B, L] (fp32)."""
    w = weights.astype(jnp.float32)
    return jnp.einsum("bld,bl->bd", h.astype(jnp.float32), w) / jnp.sum(w, axis=1, keepdims=True)
