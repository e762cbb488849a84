"""Exporting a trained workdir's model for serving: `python -m mlp_jax.main --mode=export`.

The artifact is a `jax.export` of the model as a function from uint8 pixels (batch, 784) to
class probabilities (batch, 10), serialized StableHLO whose batch dimension is symbolic, with
its parameters inside; beside it a JSON of the class names and the input layout. Loading it
needs JAX alone (`jax.export.deserialize(bytes).call(pixels)`): neither mlp_jax nor Flax.
"""

import json
import os

import jax
import jax.numpy as jnp

from mlp_jax import checkpointing, data, files, predict

EXPORT_DIR = "export"
MODEL_FILE = "model.jaxexport"
INFO_FILE = "model.json"


def export_workdir(
    workdir: str | os.PathLike, export_dir: str | os.PathLike | None = None
) -> os.PathLike:
    """Writes the workdir's latest readable checkpoint's model as EXPORT_DIR/model.jaxexport
    and EXPORT_DIR/model.json, each atomically; nothing else in the workdir is touched.

    Args:
      workdir: a training workdir.
      export_dir: where to write; default WORKDIR/export.

    Returns:
      The export folder.
    """
    restored = checkpointing.restore_workdir(workdir)
    folder = files.as_path(export_dir) if export_dir else files.as_path(workdir) / EXPORT_DIR
    files.prepare_folder(folder, what="--export_dir")
    (batch,) = jax.export.symbolic_shape("batch")
    pixels = jax.ShapeDtypeStruct((batch, data.NUM_PIXELS), jnp.uint8)
    # Every platform JAX can lower to here, so that an artifact made on a CPU serves on a GPU.
    exported = jax.export.export(
        jax.jit(predict.probabilities_fn(restored)), platforms=("cpu", "cuda", "tpu")
    )(pixels)
    info = {
        "class_names": list(data.CLASS_NAMES),
        "input": {
            "shape": ["batch", data.NUM_PIXELS],
            "dtype": "uint8",
            "layout": "28x28 grayscale images, row by row, 0 the background (as Fashion-MNIST)",
        },
        "output": {"shape": ["batch", data.NUM_CLASSES], "dtype": "float32"},
        "batch": "any size from 1",
        "platforms": list(exported.platforms),
        "epoch": int(restored.state.epoch),
        "params_fingerprint": checkpointing.params_fingerprint(restored.state.params),
    }
    if jax.process_index() == 0:  # One writer: every process holds the same model.
        files.write_atomically(folder / MODEL_FILE, bytes(exported.serialize()))
        files.write_atomically(folder / INFO_FILE, json.dumps(info, indent=1) + "\n")
    return folder
