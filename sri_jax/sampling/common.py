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


def gumbel_argmax(logits, key, temperature: float):
    """argmax(logits / T + Gumbel) == argmax(exp(logits) / (-log u)^T), the upstream form,
    computed in log space in fp32 (no exp overflow, so float64 is not needed)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    u = jax.random.uniform(key, logits.shape, jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
    g = -jnp.log(-jnp.log(u))
    return jnp.argmax(logits + temperature * g, axis=-1)


def filter_logits(logits, top_k: Optional[int], top_p: Optional[float]):
    """Top-k then top-p (nucleus) filtering as HF does: masked entries become -inf."""
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
        remove = jnp.zeros_like(remove_sorted).at[
            jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
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
