"""Metric collections (clu) and metrics.jsonl.

The collections are built on the device inside the compiled epoch and computed on the host
once per epoch. (TensorBoard files are written by `mlp_jax.writers`.)
"""

import json
import math
import os

import flax
from clu import metrics as clu_metrics

from mlp_jax import files
from mlp_jax.errors import UserError


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


JSONL_FILE = "metrics.jsonl"


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
          UserError: a line is not a record (a JSON object with a whole "epoch"), naming the
            file and the line; nothing is written then.
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
            if isinstance(record, dict) and type(record.get("epoch")) is int:
                return record
            problem = 'not a record (a JSON object with a whole "epoch")'
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


def json_safe(value):
    """A copy of `value` for JSON, which has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
