"""What a run shows: the live board of a notebook (drawn once, redrawn in place after every
epoch, nothing outside a notebook)."""

import sys

import IPython.display
import pytest
from helpers import tiny_config

from mlp_jax import progress, train
from mlp_jax.errors import UserError


class _Screen:
    """Stands in for a notebook's display: what was drawn, and what redrawn in place."""

    def __init__(self, monkeypatch):
        self.drawn, self.redrawn = [], []
        screen = self

        class Handle:
            def update(self, image):
                screen.redrawn.append(image.data)

        def display(image, display_id=None):
            assert display_id is True  # A handle, to redraw the same figure.
            screen.drawn.append(image.data)
            return Handle()

        monkeypatch.setattr(IPython.display, "display", display)


@pytest.mark.parametrize("in_a_notebook", [True, False])
def test_a_run_in_a_notebook_redraws_one_board_after_every_epoch(
    synthetic_dir, tmp_path, monkeypatch, in_a_notebook
):
    screen = _Screen(monkeypatch)
    monkeypatch.setattr(progress, "in_notebook", lambda: in_a_notebook)
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    if not in_a_notebook:  # A terminal: the epoch lines only.
        assert screen.drawn == [] and screen.redrawn == []
        return
    assert len(screen.drawn) == 1 and len(screen.redrawn) == 2
    images = screen.drawn + screen.redrawn
    assert all(image.startswith(b"\x89PNG") for image in images)
    assert len(set(images)) == 3  # Each epoch drew its own curves.


def test_a_product_line_fails_where_progress_lines_found_stdout_gone(monkeypatch, capsys):
    # A progress line met a closed pipe earlier: the result that follows cannot reach the
    # reader either, and must not pass for written.
    monkeypatch.setattr(progress, "_stdout_gone", True)
    progress.show("epoch 1")  # Dropped, the run goes on.
    with pytest.raises(UserError, match="standard output: the result could not be written"):
        progress.emit('{"test_acc": 0.85}')
    assert capsys.readouterr().out == ""


def test_a_product_line_fails_where_stdout_was_closed_from_the_start(monkeypatch):
    # `python -m mlp_jax.main --mode=eval ... >&-`: Python starts with no sys.stdout, where
    # print drops every line without a word.
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(UserError, match=r"could not be written \(it was closed when the"):
        progress.emit('{"test_acc": 0.85}')
