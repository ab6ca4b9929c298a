"""Figures saved as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def learning_curves(histories: dict[str, list[dict]], path: str | Path, *, title: str = "") -> Path:
    """Loss and accuracy per epoch, train dashed and val solid, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
