"""What a run writes of its metrics between programs: metrics.jsonl (`JsonlLog`), and
TensorBoard's event files through writers with clu's `MetricWriter` interface and no
TensorFlow.

clu's TensorBoard writer writes through TensorFlow, and importing anything under
`clu.metric_writers` imports TensorFlow (the package's `__init__` does), which costs seconds
of CPU where it is installed and fails where it is not. `TensorBoardWriter` writes the same
event files from the `tensorboard` package's protocol buffers and record framing alone, and
writes them through etils.epath, so a `gs://` workdir works as a local one does.
"""

import concurrent.futures
import io
import itertools
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from mlp_jax import files
from mlp_jax.errors import UserError

JSONL_FILE = "metrics.jsonl"


# What a run reads back of each epoch's record (its curves, its progress board): a line
# edited to lack one was a KeyError after the next epoch had trained.
EPOCH_RECORD = {"epoch": int, "train_loss": float, "val_loss": float, "val_acc": float}


class JsonlLog:
    """metrics.jsonl: one JSON object per epoch, kept consistent with the checkpoints.

    The file is written whole each time (through `mlp_jax.files`), since object stores
    cannot append; it holds one short line per epoch.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = files.as_path(path)

    def read(self) -> list[dict]:
        """All records, or [] when the file does not exist.

        Raises:
          UserError: a line is not an epoch's record (EPOCH_RECORD), naming the file and the
            line; nothing is written then.
        """
        if not files.require_kind(self.path, "a file"):
            return []
        records = []
        for number, line in enumerate(files.read_text(self.path).splitlines(), start=1):
            if line.strip():
                records.append(self._parse(line, number))
        return records

    def _parse(self, line: str, number: int) -> dict:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e})"
        else:
            if (shape := files.shape_problem(record, EPOCH_RECORD)) is None:
                return record
            problem = f"not an epoch's record ({shape})"
        raise UserError(
            f"{self.path} line {number}: {problem}; mend or delete that line (the "
            "checkpoints hold the state, the file only its history)"
        )

    def write(self, records: list[dict]) -> None:
        """Replaces the file's records with `records`."""
        files.write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def truncate_after(self, epoch: int) -> list[dict]:
        """Drops records of epochs after `epoch` (not covered by a checkpoint); returns the rest."""
        kept = [r for r in self.read() if r["epoch"] <= epoch]
        self.write(kept)
        return kept


_WRITERS_MADE = itertools.count()


class TensorBoardWriter:
    """Writes TensorBoard event files; implements clu's `MetricWriter` interface.

    The events are kept in memory and each `flush` writes the whole file anew (object
    stores cannot append); a run's events are a few kilobytes per epoch.
    """

    def __init__(self, logdir: str | os.PathLike):
        self._logdir = files.as_path(logdir)
        self._logdir.mkdir(parents=True, exist_ok=True)
        # The writer's number in this process: a run resumed in the same second by the same
        # process (a notebook, a test) must not write over the file of the run before it.
        # Padded, since TensorBoard reads a folder's files in the order of their names: the
        # tenth writer's ".10" came before the ninth's ".9", and its steps first.
        number = next(_WRITERS_MADE)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
            f".{number:06d}"
        )
        self.path = self._logdir / name
        self._buffer = io.BytesIO()
        self._records = RecordWriter(self._buffer)
        self._unflushed = False
        self._write_event(event_pb2.Event(file_version="brain.Event:2"))

    def _write_event(self, event: event_pb2.Event) -> None:
        event.wall_time = event.wall_time or time.time()
        self._records.write(event.SerializeToString())
        self._unflushed = True

    def _write_values(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        self._write_event(
            event_pb2.Event(step=int(step), summary=summary_pb2.Summary(value=values))
        )

    def write_summaries(
        self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Raw tensors, each with an optional `SummaryMetadata` proto from `metadata`."""
        self._write_values(
            step,
            [
                summary_pb2.Summary.Value(
                    tag=tag,
                    tensor=tensor_util.make_tensor_proto(np.asarray(value)),
                    metadata=(metadata or {}).get(tag),
                )
                for tag, value in values.items()
            ],
        )

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """One scalar per tag."""
        self._write_values(
            step,
            [
                summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                for tag, value in scalars.items()
            ],
        )

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Images of shape [H, W, C] or [N, H, W, C] (C of 1, 3 or 4; uint8 or [0, 1] floats)."""
        from matplotlib import image as mpl_image  # noqa: PLC0415  (only when images are written)

        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch)
            batch = batch[None] if batch.ndim == 3 else batch
            for i, picture in enumerate(batch):
                encoded = io.BytesIO()
                mpl_image.imsave(
                    encoded,
                    picture.squeeze(-1) if picture.shape[-1] == 1 else picture,
                    format="png",
                    cmap="gray",
                )
                height, width, channels = picture.shape
                values.append(
                    summary_pb2.Summary.Value(
                        tag=f"{tag}/image/{i}" if len(batch) > 1 else tag,
                        image=summary_pb2.Summary.Image(
                            height=height,
                            width=width,
                            colorspace=channels,
                            encoded_image_string=encoded.getvalue(),
                        ),
                    )
                )
        self._write_values(step, values)

    def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
        """Not supported: logged once and dropped (as clu's PyTorch writer does)."""
        del step, videos
        logging.log_first_n(logging.WARNING, "TensorBoardWriter does not write videos.", 1)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
        """Not supported: logged once and dropped."""
        del step, audios, sample_rate
        logging.log_first_n(logging.WARNING, "TensorBoardWriter does not write audio.", 1)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """One (Markdown) text per tag, shown by TensorBoard's text plugin."""
        metadata = text_metadata.create_summary_metadata(display_name="", description="")
        self._write_values(
            step,
            [
                summary_pb2.Summary.Value(
                    tag=tag,
                    tensor=tensor_util.make_tensor_proto(np.array(text, dtype=object)),
                    metadata=metadata,
                )
                for tag, text in texts.items()
            ],
        )

    def write_histograms(
        self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
    ) -> None:
        """A histogram per tag (30 buckets unless `num_buckets` names another count)."""
        values = []
        for tag, array in arrays.items():
            array = np.asarray(array, dtype=np.float64).ravel()
            counts, edges = np.histogram(array, bins=(num_buckets or {}).get(tag, 30))
            histogram = summary_pb2.HistogramProto(
                min=float(array.min()),
                max=float(array.max()),
                num=array.size,
                sum=float(array.sum()),
                sum_squares=float(np.square(array).sum()),
                bucket_limit=edges[1:].tolist(),
                bucket=counts.astype(np.float64).tolist(),
            )
            values.append(summary_pb2.Summary.Value(tag=tag, histo=histogram))
        self._write_values(step, values)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Hyperparameters for TensorBoard's HParams plugin (bool, number or string values)."""
        summary = hparams_summary.hparams_pb(
            {
                k: v if isinstance(v, bool | int | float | str) else str(v)
                for k, v in hparams.items()
            }
        )
        self._write_event(event_pb2.Event(step=0, summary=summary))

    def flush(self) -> None:
        """Writes every event so far to the file."""
        if self._unflushed:
            files.write_atomically(self.path, self._buffer.getvalue())
            self._unflushed = False

    def close(self) -> None:
        """Flushes; the writer must not be used afterwards."""
        self.flush()


class BackgroundWriter:
    """Runs a writer's calls on a worker thread, in order, so that a write to a remote
    workdir never holds up the next epoch.

    Attributes:
      writer: the wrapped writer (read it only after `close`).
    """

    def __init__(self, writer):
        self.writer = writer
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer")
        self._pending: list[concurrent.futures.Future] = []

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Queues scalars for `step` and a flush after them."""
        self._pending.append(self._executor.submit(self.writer.write_scalars, step, scalars))
        self._pending.append(self._executor.submit(self.writer.flush))

    def close(self) -> None:
        """Waits for everything queued (raising the first error), then closes the writer."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._executor.shutdown()
            self.writer.close()
