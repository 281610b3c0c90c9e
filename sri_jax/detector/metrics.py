"""Detector evaluation: ranking metrics, operating points, refusal rate with the guard.

Convention: scores are "higher = more attack-like" (``SRIGuard.score_samples``, the
reconstruction error; ``SRIClassifier.decision_function``); attacks are the POSITIVE class;
a trace is flagged when its score is STRICTLY greater than the threshold (as ``predict``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _scores(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contain NaN/inf; scores must be finite")
    return a


def threshold_at_fpr(scores_benign, fpr: float) -> float:
    """The lowest benign score t with (share of benign scores > t) <= ``fpr``.

    With benign scores sorted descending s_(1) >= s_(2) >= ..., t = s_(k+1), k = floor(fpr*n):
    at most k benign traces score above it (fewer on ties), so the realised FPR never exceeds
    ``fpr``. (np.quantile's interpolation can overshoot the target FPR on small samples.)
    """
    b = _scores(scores_benign, "scores_benign")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    k = int(np.floor(fpr * b.size + 1e-9))
    return float(np.sort(b)[::-1][k])


def tpr_at_fpr(scores_benign, scores_attack, fpr: float) -> float:
    """Share of attacks flagged at the threshold ``threshold_at_fpr(scores_benign, fpr)``."""
    a = _scores(scores_attack, "scores_attack")
    return float(np.mean(a > threshold_at_fpr(scores_benign, fpr)))


def evaluate_scores(scores_benign, scores_attack, threshold: float) -> dict:
    """Metrics of a detector's scores (higher = more attack-like; attack = positive).

    Returns a dict of floats: ``auroc`` and ``auprc`` (sklearn ``roc_auc_score`` /
    ``average_precision_score``), ``tpr`` and ``fpr`` at ``threshold`` (flagged = score >
    threshold), ``tpr_at_1pct_fpr`` / ``tpr_at_5pct_fpr`` with thresholds chosen on the given
    benign scores (``threshold_at_fpr``; the thresholds and realised FPRs are included),
    ``threshold``, ``n_benign`` and ``n_attack``.
    """
    b = _scores(scores_benign, "scores_benign")
    a = _scores(scores_attack, "scores_attack")
    threshold = float(threshold)
    y = np.concatenate([np.zeros(b.size), np.ones(a.size)])
    s = np.concatenate([b, a])
    out = {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "threshold": threshold,
        "tpr": float(np.mean(a > threshold)),
        "fpr": float(np.mean(b > threshold)),
        "n_benign": int(b.size),
        "n_attack": int(a.size),
    }
    for pct in (1, 5):
        t = threshold_at_fpr(b, pct / 100)
        out[f"tpr_at_{pct}pct_fpr"] = float(np.mean(a > t))
        out[f"threshold_at_{pct}pct_fpr"] = t
        out[f"realised_fpr_at_{pct}pct"] = float(np.mean(b > t))
    return out


def refusal_with_guard(refused, flagged) -> np.ndarray:
    """Per-generation refusal with the guard in front: refused OR flagged (bool [N]).

    A flagged generation is blocked, which counts as a refusal; ``.mean()`` is the refusal
    rate with the guard (the paper's "jailbreak refusal %" / "false positives %" columns,
    depending on whether the prompts are attacks or benign).
    """
    r = np.asarray(refused)
    f = np.asarray(flagged)
    if r.shape != f.shape or r.ndim != 1:
        raise ValueError(f"refused {r.shape} and flagged {f.shape} must be 1-D arrays of the "
                         "same length (one entry per generation)")
    for name, v in (("refused", r), ("flagged", f)):
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
    return r.astype(bool) | f.astype(bool)
