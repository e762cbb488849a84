"""mlp_jax.plots: the curves a run draws into curves.png."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from mlp_jax import plots


@pytest.mark.parametrize("loss_scale", [1.0, 1e5])
def test_the_curves_keep_every_label_inside_the_figure(loss_scale):
    # A loss in the hundreds of thousands (a too-large lr that has not yet diverged) has
    # wider tick labels than the chapter's: neither may be cut off at the figure's edge.
    history = [
        {
            "epoch": epoch,
            "train_loss": loss_scale * 2.3 / epoch,
            "val_loss": loss_scale * 2.4 / epoch,
            "val_acc": 0.5 + epoch / 50,
        }
        for epoch in range(1, 11)
    ]
    figure = plots.curves_figure(history, title="mlp_scratch")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    drawn = figure.axes[0].get_tightbbox(canvas.get_renderer())  # Ticks, labels, title.
    edge = figure.bbox
    assert edge.x0 <= drawn.x0 and drawn.x1 <= edge.x1, (drawn, edge)
    assert edge.y0 <= drawn.y0 and drawn.y1 <= edge.y1, (drawn, edge)
