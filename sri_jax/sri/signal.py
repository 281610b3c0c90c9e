"""The SRI signal: pure functions (jnp, fp32) shared by the fused samplers and offline analysis.

    d_t^k   = 1 - cos(phi_t, mu_t^k)               (eps added to both norms)
    sigma_t = sigmoid((log(d_t^- + eps) - log(d_t^+ + eps)) / tau)

sigma near 1: close to the harmless-compliance center mu^+; near 0: close to the refusal
center mu^-.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8
DEFAULT_TAU = 0.1


def cosine_distance(phi, mu, eps: float = EPS):
    """1 - cos(phi, mu) over the last axis, eps added to both norms, clamped at 0 (fp32)."""
    phi = jnp.asarray(phi, jnp.float32)
    mu = jnp.asarray(mu, jnp.float32)
    dot = jnp.sum(phi * mu, axis=-1)
    cos = dot / ((jnp.linalg.norm(phi, axis=-1) + eps) * (jnp.linalg.norm(mu, axis=-1) + eps))
    # Rounding can push cos a hair above 1 for phi == mu; clamp so log(d + eps) stays finite
    # (the unclamped formula gives NaN there).
    return jnp.maximum(1.0 - cos, 0.0)


def sri_from_distances(d_harmless, d_harmful, tau: float = DEFAULT_TAU, eps: float = EPS):
    return jax.nn.sigmoid((jnp.log(d_harmful + eps) - jnp.log(d_harmless + eps)) / tau)


def sri_step(phi, mu_harmless, mu_harmful, tau: float = DEFAULT_TAU):
    """sigma for one step: phi [..., D] against the step's centers [D] (or broadcastable)."""
    return sri_from_distances(cosine_distance(phi, mu_harmless),
                              cosine_distance(phi, mu_harmful), tau)


@dataclasses.dataclass(frozen=True, eq=False)
class Centers:
    """Per-step anchors: ``harmless`` (mu^+) and ``harmful`` (mu^-), each [T, D].

    ``meta`` records how they were made (model id and weight hash, sampler config, layer,
    pooling, T, dtype, prompt-set hashes, counts kept per class, library version). Saved and
    loaded by :func:`sri_jax.save_centers` / :func:`sri_jax.load_centers`.
    """

    harmless: Any
    harmful: Any
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        h = np.asarray(self.harmless)
        r = np.asarray(self.harmful)
        if h.ndim != 2 or r.ndim != 2:
            raise ValueError(f"centers must be [T, D] arrays, got harmless {h.shape} and "
                             f"harmful {r.shape}")
        if h.shape != r.shape:
            raise ValueError(f"harmless center {h.shape} and harmful center {r.shape} differ "
                             "in shape; both must be [T, D] from the same sampler config")
        for name, a in (("harmless", h), ("harmful", r)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"the {name} center contains NaN or inf; recompute it "
                                 "(were enough samples kept after filtering?)")

    @property
    def steps(self) -> int:
        return int(np.shape(self.harmless)[0])

    @property
    def dim(self) -> int:
        return int(np.shape(self.harmless)[1])

    def check(self, steps: int, dim: int) -> None:
        if (self.steps, self.dim) != (steps, dim):
            raise ValueError(
                f"centers are [T={self.steps}, D={self.dim}] but this run needs "
                f"[T={steps}, D={dim}]: calibrate centers with the same model, sampler steps "
                "and layer (sri_jax.calibrate / `sri-jax calibrate`)")

    def device_arrays(self):
        return (jnp.asarray(self.harmless, jnp.float32), jnp.asarray(self.harmful, jnp.float32))


def sri_signal(activations, centers: Centers, tau: float = DEFAULT_TAU) -> np.ndarray:
    """sigma [..., T] from pooled activations phi [..., T, D] and per-step centers [T, D]."""
    phi = jnp.asarray(activations, jnp.float32)
    if phi.ndim < 2:
        raise ValueError(f"activations must be [..., T, D], got shape {phi.shape}")
    centers.check(phi.shape[-2], phi.shape[-1])
    mu_p, mu_n = centers.device_arrays()
    return np.asarray(sri_step(phi, mu_p, mu_n, tau))


def internal_recovery_rate(sri, lambda_c: float = 0.5, lambda_r: float = 0.5) -> float:
    """IRR: share of traces compliant at some step (sigma > lambda_c) and refusal-aligned at
    the end (sigma_T < lambda_r)."""
    s = np.asarray(sri, np.float64)
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"sri must be a non-empty [N, T] array, got shape {s.shape}")
    recovered = (s > lambda_c).any(axis=1) & (s[:, -1] < lambda_r)
    return float(recovered.mean())


def centers_from_activations(acts_harmless, acts_harmful, meta: Optional[dict] = None) -> Centers:
    """Average pooled activations [N, T, D] of the kept samples of each class per step."""
    h = np.asarray(acts_harmless, np.float32)
    r = np.asarray(acts_harmful, np.float32)
    for name, a in (("harmless", h), ("harmful", r)):
        if a.ndim != 3 or a.shape[0] == 0:
            raise ValueError(f"no {name} samples to average (got shape {a.shape})")
    return Centers(h.astype(np.float64).mean(0).astype(np.float32),
                   r.astype(np.float64).mean(0).astype(np.float32), dict(meta or {}))
