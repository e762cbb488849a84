"""Training curves as d2l's ProgressBoard draws them, written between epochs; and the
saving of every figure the library draws, to any path `mlp_jax.files` accepts."""

import io
import os

from mlp_jax import files
from mlp_jax.errors import UserError

try:
    from matplotlib.figure import Figure
except ValueError as e:  # matplotlib checks $MPLBACKEND as it is imported.
    if "backend" not in str(e) or "MPLBACKEND" not in os.environ:
        raise
    raise UserError(
        f"MPLBACKEND={os.environ['MPLBACKEND']!r} is not a backend matplotlib knows; unset it "
        "(the figures here are drawn without one) or name one"
    ) from None


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Writes `fig` as a PNG to `path`, local or remote (gs://...)."""
    files.write_atomically(files.as_path(path), png_bytes(fig))


CURVES = (("train_loss", "-"), ("val_loss", "--"), ("val_acc", "-."))


def curves_figure(history: list[dict], title: str = "") -> Figure:
    """Train loss, val loss and val acc against epoch, as d2l's ProgressBoard draws them.

    Args:
      history: per-epoch records with the keys "epoch" and those in CURVES.
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
    # Margins measured from the labels (a third of the plot's time): fixed ones cut off the
    # ticks of a loss in the hundreds of thousands.
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    """`fig` as PNG bytes."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return png.getvalue()


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Writes `curves_figure(history, title)` into `path` (a PNG)."""
    save_figure(curves_figure(history, title), path)
