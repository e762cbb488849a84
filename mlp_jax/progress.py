"""What a run shows while it runs: its lines on stdout (`show`); in a notebook, a live board of
its curves (`EpochBoard`); a sweep's live bar on a terminal or in a notebook, plain lines
elsewhere. All told between epochs, never from inside a compiled one."""

import contextlib
import os
import sys
import time

import jax
import rich.console
import rich.progress

from mlp_jax.errors import UserError

_stdout_gone = False


def show(*parts) -> None:
    """Prints one line for the user on stdout. A stream that closed or broke (the command
    piped into `head`, a terminal gone) must not stop a run or lose a save: that line and
    every later one are dropped, and the run goes on."""
    if _stdout_gone:
        return
    try:
        print(*parts, flush=True)
    except (OSError, ValueError):  # A broken pipe, a dead terminal, a closed stream.
        _give_up_stdout()


def emit(line: str) -> None:
    """Prints one line of a command's product (eval's JSON, predict's classes, export's
    folder) on stdout: unlike `show`, a line that cannot be written (a full disk, a closed
    pipe, /dev/full, a stream closed from the start, or one an earlier line found gone) fails
    the command, since a script reading it could not tell an empty answer from success.

    Raises:
      UserError: naming standard output and what went wrong.
    """
    reason = "an earlier line found it closed" if _stdout_gone else None
    if sys.stdout is None:  # Closed before Python started (`>&-`): print would drop the line.
        reason = "it was closed when the command started"
    if reason is None:
        try:
            print(line, flush=True)
            return
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            _give_up_stdout()
    raise UserError(
        f"standard output: the result could not be written ({reason}); write it where "
        "there is room and the reader is still there"
    )


def _give_up_stdout() -> None:
    """Sends what is still buffered, and every later line, nowhere, so that the
    interpreter's last flush cannot fail too."""
    global _stdout_gone
    _stdout_gone = True
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel, where figures can be shown."""
    return rich.console.Console().is_jupyter


class EpochBoard:
    """d2l's ProgressBoard for one run: in a notebook, one figure of the train loss, val loss
    and val acc, redrawn in place after every epoch; elsewhere (a terminal, CI) nothing, the
    epoch lines say it. Process 0 only."""

    def __init__(self, title: str = "", live: bool | None = None):
        self._title = title
        self._live = (in_notebook() if live is None else live) and jax.process_index() == 0
        self._handle = None

    def update(self, history: list[dict]) -> None:
        """Draws the curves of `history` (the run's records so far) over the last drawing."""
        if not self._live or not history:
            return
        from IPython import display  # noqa: PLC0415  (only a notebook draws)

        from mlp_jax import plots  # noqa: PLC0415  (matplotlib, only when drawn)

        image = display.Image(plots.png_bytes(plots.curves_figure(history, self._title)))
        if self._handle is None:
            self._handle = display.display(image, display_id=True)
        else:
            self._handle.update(image)


class Progress:
    """What a sweep shows while it runs, on process 0.

    On a terminal or in a notebook: a live bar (rich) over all model-epochs, naming the
    population (its index of the total, its shape, how many models), the epoch and the best
    validation accuracy so far, with elapsed and remaining time. Elsewhere (CI, logs): one
    plain line per finished population. Nothing is added inside the compiled epoch: it is
    told between epochs.
    """

    def __init__(self, num_populations: int, model_epochs: int, live: bool | None = None):
        self._console = rich.console.Console(stderr=True)
        self._live = (
            live if live is not None else (self._console.is_terminal or self._console.is_jupyter)
        )
        self._quiet = jax.process_index() != 0
        self._num_populations, self._model_epochs = num_populations, model_epochs
        self._done_model_epochs, self._best = 0, float("nan")
        # Trained (not cached) model-epochs and their seconds: what the time left is judged by.
        self._trained_model_epochs, self._trained_seconds = 0, 0.0
        self._started = self._population_started = time.perf_counter()
        self._bar = None
        if self._live and not self._quiet:
            self._bar = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.MofNCompleteColumn(),
                rich.progress.TimeElapsedColumn(),
                rich.progress.TimeRemainingColumn(),
                console=self._console,
            )
            self._task = self._bar.add_task("", total=model_epochs)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def population_started(self, number: int, shape: str, size: int) -> None:
        """A population begins: its index (from 1), its shape and its number of models."""
        self._label = f"population {number}/{self._num_populations} ({shape}, {size} models)"
        self._population_started = time.perf_counter()
        self._show(epoch="")

    def epoch_done(self, epoch: int, num_epochs: int, size: int, val_accs: list[float]) -> None:
        """An epoch of the current population ended with these validation accuracies."""
        self._done_model_epochs += size
        self._note_best(val_accs)
        self._show(epoch=f", epoch {epoch}/{num_epochs}")

    def population_done(
        self, num_epochs: int, size: int, cached: bool, val_accs: list[float]
    ) -> None:
        """The current population ended (or came from the cache) with these validation
        accuracies, every epoch's of every member, so that a cached population's best is the
        best its live run showed."""
        seconds = time.perf_counter() - self._population_started
        if cached:
            self._done_model_epochs += num_epochs * size
            self._note_best(val_accs)
            self._show(epoch=", cached")
        else:
            self._trained_model_epochs += num_epochs * size
            self._trained_seconds += seconds
        if self._bar is None and not self._quiet:
            elapsed = time.perf_counter() - self._started
            left = self._model_epochs - self._done_model_epochs
            remaining = self._trained_seconds / max(self._trained_model_epochs, 1) * left
            took = "cached" if cached else f"{seconds:.1f} s"
            show(
                f"{self._label}: {num_epochs} epochs, {took}; best val_acc so far "
                f"{self._best:.4f}; {elapsed:.0f} s elapsed, about {remaining:.0f} s left"
            )

    def _note_best(self, val_accs: list[float]) -> None:
        finite = [a for a in val_accs if a == a]  # NaN marks a diverged member.
        if finite and not max(finite) <= self._best:
            self._best = max(finite)

    def _show(self, epoch: str) -> None:
        if self._bar is not None:
            description = f"{self._label}{epoch}, best val_acc {self._best:.4f}"
            self._bar.update(self._task, completed=self._done_model_epochs, description=description)
