"""Training curves as d2l's ProgressBoard draws them, written between epochs."""

import os

from matplotlib.figure import Figure

CURVES = (("train_loss", "-"), ("val_loss", "--"), ("val_acc", "-."))


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Plots train loss, val loss and val acc against epoch into `path` (a PNG).

    Args:
      history: per-epoch records with the keys "epoch" and those in CURVES.
      path: output file.
      title: optional figure title (e.g. the experiment).
    """
    # Figure, not pyplot: no global state, no GUI backend, safe beside other threads.
    fig = Figure(figsize=(4.5, 3.2), dpi=120)
    ax = fig.subplots()
    epochs = [record["epoch"] for record in history]
    for key, style in CURVES:
        ax.plot(epochs, [record[key] for record in history], style, marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_xlim(0, max(epochs, default=1) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
