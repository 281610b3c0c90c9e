"""Figures of SRI traces (matplotlib, Agg backend): every function saves a PNG and returns its path.

``groups`` everywhere is an ordered mapping name -> SRI array [N, T] (one row per trace).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from . import LAMBDA_R, summarize


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _shade(ax, steps):
    ax.axhspan(0.5, 1.0, color="tab:green", alpha=0.08, label="compliance region")
    ax.axhspan(0.0, 0.5, color="tab:red", alpha=0.08, label="refusal region")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xlim(1, steps)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("generation step t")
    ax.set_ylabel("SRI  sigma_t")


def plot_signal(groups: Mapping[str, np.ndarray], path, *, harmless_ref: Optional[np.ndarray] = None,
                refusal_ref: Optional[np.ndarray] = None, title: str = "SRI signal",
                max_traces: int = 12):
    """The reference plot: regions, harmless and refusal reference curves, test traces."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = max(s.shape[1] for s in groups.values())  # groups may differ in length
    _shade(ax, steps)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, s) in enumerate(groups.items()):
        c = colors[k % len(colors)]
        t = np.arange(1, s.shape[1] + 1)
        for row in s[:max_traces]:
            ax.plot(t, row, color=c, alpha=0.35, lw=0.8)
        ax.plot(t, s.mean(0), color=c, lw=2.2, label=f"{name} (mean of {len(s)})")
    for ref, style, label in ((harmless_ref, "k-", "harmless reference"),
                              (refusal_ref, "k:", "refusal reference")):
        if ref is not None:
            ax.plot(np.arange(1, len(ref) + 1), ref, style, lw=2.5, label=label)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return save_figure(fig, path)


def plot_overlays(groups: Mapping[str, np.ndarray], path, *, max_traces: int = 200):
    """Many traces per group (one panel each) with the group mean."""
    plt = pyplot()
    n = len(groups)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, s) in zip(axes.flat, groups.items()):
        steps = s.shape[1]
        t = np.arange(1, steps + 1)
        _shade(ax, steps)
        for row in s[:max_traces]:
            ax.plot(t, row, color="tab:blue", alpha=0.12, lw=0.7)
        ax.plot(t, s.mean(0), color="k", lw=2)
        ax.set_title(f"{name} (n={len(s)})", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_irr(irr: Mapping[str, Mapping[float, float]], path):
    """Grouped bars: IRR per group at each lambda_r."""
    plt = pyplot()
    names = list(irr)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    w = 0.8 / len(LAMBDA_R)
    for k, lam in enumerate(LAMBDA_R):
        ax.bar(np.arange(len(names)) + k * w, [irr[n][lam] for n in names], w,
               label=f"lambda_r={lam}")
    ax.set_xticks(np.arange(len(names)) + w * (len(LAMBDA_R) - 1) / 2, names, rotation=25,
                  ha="right", fontsize=8)
    ax.set_ylabel("internal recovery rate")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rates(rates: Mapping[str, float], path, ylabel="refusal rate"):
    plt = pyplot()
    names = list(rates)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    ax.bar(names, [rates[n] for n in names], color="tab:red")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=25, labelsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_lda(groups: Mapping[str, np.ndarray], path):
    """2-D linear discriminant projection of SRI traces; when only one discriminant axis
    exists (two groups), the second axis is the traces' first principal component."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    plt = pyplot()
    x = np.concatenate(list(groups.values()))
    y = np.concatenate([[k] * len(s) for k, s in enumerate(groups.values())])
    z = LinearDiscriminantAnalysis().fit_transform(x, y)[:, :2]
    two_ld = z.shape[1] == 2
    if not two_ld:  # two groups (or rank-deficient traces): one discriminant axis only
        z = np.concatenate([z, PCA(n_components=1).fit_transform(x)], 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, name in enumerate(groups):
        ax.scatter(z[y == k, 0], z[y == k, 1], s=10, alpha=0.6, label=name)
    ax.set_xlabel("LD1")
    ax.set_ylabel("LD2" if two_ld else "PC1")
    ax.set_title("SRI space (LDA)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """``fig`` as a PNG at ``path`` (parent folders made), closed; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def make_figures(groups: Mapping[str, Mapping[str, np.ndarray]], out_dir, *,
                 centers=None) -> list[Path]:
    """signal.png, overlays.png, irr.png, refusal_rate.png, lda.png under ``out_dir``."""
    out = Path(out_dir)
    sri = {k: np.asarray(v["sri"]) for k, v in groups.items()}
    curves = (dict(centers.meta).get("reference_curves") or {}) if centers is not None else {}
    ref = {k: (np.asarray(curves[k]) if k in curves else None) for k in ("harmless", "refusal")}
    paths = [
        plot_signal(sri, out / "signal.png", harmless_ref=ref["harmless"],
                          refusal_ref=ref["refusal"]),
        plot_overlays(sri, out / "overlays.png"),
        plot_irr({r["group"]: {lam: r[f"irr@{lam}"] for lam in LAMBDA_R}
                        for r in summarize(groups)}, out / "irr.png"),
        plot_rates({k: float(np.mean(v["refused"])) for k, v in groups.items()},
                         out / "refusal_rate.png"),
    ]
    steps = sorted({v.shape[1] for v in sri.values()})
    if len(steps) > 1:
        warnings.warn(f"lda.png skipped: the groups have different generation lengths "
                      f"(T = {', '.join(map(str, steps))}); plot one length at a time for it",
                      stacklevel=2)
    elif len(sri) >= 2:
        paths.append(plot_lda(sri, out / "lda.png"))
    return paths
