"""Figures saved as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

Target = str | Path | IO[bytes]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Target) -> Target:
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    _plt().close(fig)
    return path


def learning_curves(histories: dict[str, list[dict]], path: Target, *, title: str = "") -> Target:
    """Loss and accuracy per epoch, train dashed and val solid, one colour per run."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, epochs) in enumerate(histories.items()):
        x = range(1, len(epochs) + 1)
        colour = f"C{i}"
        for ax, metric in zip(axes, ("loss", "accuracy")):
            ax.plot(x, [e[f"train_{metric}"] for e in epochs], "--", color=colour, label=f"{name} train")
            if epochs and f"val_{metric}" in epochs[0]:
                ax.plot(x, [e[f"val_{metric}"] for e in epochs], "-", color=colour, label=f"{name} val")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Target) -> Target:
    """ROC curves, one per (part, level) with its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _plt().subplots(figsize=(5, 4.5))
    for name, (y, p) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def metric_by_flag(rows: list[dict], flags: list[str], metric: str, path: Target) -> Target:
    """The selection metric against each flag's values: one panel per flag, one dot per trial."""
    fig, axes = _plt().subplots(1, len(flags), figsize=(3.2 * len(flags), 3), squeeze=False)
    for ax, flag in zip(axes[0], flags):
        values = sorted({r[flag] for r in rows}, key=_sort_key)
        for r in rows:
            ax.scatter(values.index(r[flag]), r[metric], color="C0", alpha=0.7)
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlabel(flag)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def parallel_coordinates(rows: list[dict], flags: list[str], metric: str, path: Target) -> Target:
    """One line per trial across the flags (value rank on each axis) to the metric, coloured by the metric."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(flags), 4))
    metric_values = np.array([r[metric] for r in rows], dtype=float)
    lo, hi = np.nanmin(metric_values), np.nanmax(metric_values)
    cmap = plt.get_cmap("viridis")
    axes_values = {f: sorted({r[f] for r in rows}, key=_sort_key) for f in flags}
    for r, m in zip(rows, metric_values):
        ys = [axes_values[f].index(r[f]) / max(1, len(axes_values[f]) - 1) for f in flags]
        ys.append((m - lo) / (hi - lo) if hi > lo else 0.5)
        ax.plot(range(len(ys)), ys, color=cmap((m - lo) / (hi - lo) if hi > lo else 0.5), alpha=0.8)
    labels = [f"{f}\n{axes_values[f][0]}..{axes_values[f][-1]}" for f in flags] + [f"{metric}\n{lo:.3g}..{hi:.3g}"]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks([])
    for x in range(len(labels)):
        ax.axvline(x, color="grey", lw=0.5)
    return _save(fig, path)


def _sort_key(value):
    return (0, float(value), "") if _is_number(value) else (1, 0.0, str(value))


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
