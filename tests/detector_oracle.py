"""The SRI Guard's score as a separate float64 numpy implementation (the paper's MLP
autoencoder: tanh after every layer but the last, mean squared reconstruction error)."""

from __future__ import annotations

import numpy as np


def np_mlp(params, x) -> np.ndarray:
    """The MLP on the plain ``{"layers": [{"kernel", "bias"}, ...]}`` pytree (``params_``)."""
    h = np.asarray(x, np.float64)
    layers = params["layers"]
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


def np_guard_score(params, traces) -> np.ndarray:
    """mean_t (x_t - AE(x)_t)^2 per trace [N] (``SRIGuard.score_samples``)."""
    x = np.asarray(traces, np.float64)
    return np.mean((x - np_mlp(params, x)) ** 2, axis=1)


def np_quantile_linear(values, q: float) -> float:
    """numpy's default ("linear") quantile by hand: sort, then interpolate between the two
    order statistics around position q * (n - 1)."""
    s = sorted(float(v) for v in values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def mann_whitney_auc(benign, attack) -> float:
    """AUROC by its definition: P(attack > benign) + 0.5 P(tie), plain Python."""
    tot = 0.0
    for sa in attack:
        for sb in benign:
            tot += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
    return tot / (len(attack) * len(benign))


# Guard scores: fp32 (jnp) vs this float64 oracle. The MLP's output r (|r| <~ 1) is off by
# a few fp32 ulps, <~ 1e-6; the score mean((x - r)^2) then moves by <~ 2 |x - r| 1e-6
# = 2 sqrt(score) 1e-6 -- relative 2e-6 / sqrt(score), so rtol 1e-4 holds for scores >= 4e-4
# and the absolute 1e-7 covers smaller ones (sqrt(4e-4) * 2e-6 = 4e-8).
SCORE_RTOL, SCORE_ATOL = 1e-4, 1e-7
