"""Metric collections (clu) and how their values are named in records.

The collections are built on the device inside the compiled epoch and computed on the host
once per epoch. Nothing here reads or writes a file, so the pure steps may import it: the
records go to metrics.jsonl and TensorBoard through `mlp_jax.writers`.
"""

import math

import flax
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


def json_safe(value):
    """A copy of `value` for JSON, which has no NaN or infinity: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
