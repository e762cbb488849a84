"""Metric collections (clu), metric writers (TensorBoard through clu) and metrics.jsonl.

The collections are built on the device inside the compiled epoch and computed on the host
once per epoch. clu's TensorBoard writer imports TensorFlow, so it is imported only when a
writer is made; where TensorFlow is missing, PyTorch's TensorBoard writer (also in clu) is
used, and where both are missing, metrics are logged only.
"""

import concurrent.futures
import json
import math
import os
from pathlib import Path

import flax
from absl import logging
from clu import metrics as clu_metrics


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    """Training loss and accuracy, averaged over every real example of an epoch."""

    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    """Evaluation loss and accuracy over every example of a split."""

    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


# How computed metrics are named in records (metrics.jsonl, results): d2l's "loss", "acc".
_RECORD_NAMES = {"loss": "loss", "accuracy": "acc"}


def record_values(computed: dict, prefix: str) -> dict[str, float]:
    """Computed metric values as record entries, e.g. {"val_loss": ..., "val_acc": ...}."""
    return {f"{prefix}{_RECORD_NAMES[name]}": float(value) for name, value in computed.items()}


def to_floats(collection: clu_metrics.Collection, prefix: str) -> dict[str, float]:
    """Computes a collection on the host as record entries (see `record_values`)."""
    return record_values(collection.compute(), prefix)


def create_writer(workdir: str | os.PathLike, is_main_process: bool):
    """clu's default writer (logging + TensorBoard), with a TensorFlow-free fallback.

    Args:
      workdir: where the TensorBoard event files go.
      is_main_process: only process 0 writes files; the others log.
    """
    try:
        from mlp_jax.data import hide_gpus_from_tensorflow  # noqa: PLC0415

        hide_gpus_from_tensorflow()
        from clu import metric_writers  # noqa: PLC0415  (imports TensorFlow)

        return metric_writers.create_default_writer(
            workdir, just_logging=not is_main_process, asynchronous=True
        )
    except ImportError:
        pass
    from clu.metric_writers.logging_writer import LoggingWriter  # noqa: PLC0415
    from clu.metric_writers.multi_writer import MultiWriter  # noqa: PLC0415

    writers = [LoggingWriter()]
    if is_main_process:
        try:
            from clu.metric_writers.torch_tensorboard_writer import (  # noqa: PLC0415
                TorchTensorboardWriter,
            )

            writers.append(TorchTensorboardWriter(os.fspath(workdir)))
        except ImportError:
            logging.warning("neither TensorFlow nor PyTorch is installed: no TensorBoard files")
    return MultiWriter(writers)


class BackgroundWriter:
    """A metric writer made and used on a worker thread.

    Importing TensorFlow for clu's TensorBoard writer takes seconds; here it overlaps data
    loading, compilation and training instead of delaying them. Writes keep their order.
    """

    def __init__(self, workdir: str | os.PathLike, is_main_process: bool):
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer")
        self._writer = self._executor.submit(create_writer, workdir, is_main_process)
        self._pending = []

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Queues scalars for step `step`."""
        self._pending.append(
            self._executor.submit(lambda: self._writer.result().write_scalars(step, scalars))
        )

    def close(self) -> None:
        """Writes everything queued, flushes and closes the underlying writer."""
        for future in self._pending:
            future.result()
        self._writer.result().close()
        self._executor.shutdown()


class JsonlLog:
    """metrics.jsonl: one JSON object per epoch, kept consistent with the checkpoints."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict]:
        """All records, or [] when the file does not exist."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> list[dict]:
        """Drops records of epochs after `epoch` (not covered by a checkpoint); returns the rest."""
        kept = [r for r in self.read() if r["epoch"] <= epoch]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def append(self, record: dict) -> None:
        """Adds one record and flushes it to disk."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def json_safe(value):
    """A copy of `value` for JSON, which has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
