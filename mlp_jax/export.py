"""Exporting a trained workdir's model for serving: `python -m mlp_jax.main --mode=export`.

The artifact is a `jax.export` of the model as a function from uint8 pixels (batch, 784) to
class probabilities (batch, 10), serialized StableHLO whose batch dimension is symbolic, with
its parameters inside; beside it a JSON of the class names and the input layout. Loading it
needs JAX alone (`jax.export.deserialize(bytes).call(pixels)`): neither mlp_jax nor Flax.
"""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
from etils import epath

from mlp_jax import checkpointing, data, errors, files, predict
from mlp_jax.errors import UserError

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
    workdir = files.as_path(workdir)  # A bytes path refused in words before any use.
    identity = files.identity(workdir) if not files.is_remote(workdir) else None
    restored = checkpointing.restore_workdir(workdir)
    folder = files.as_path(export_dir) if export_dir else workdir / EXPORT_DIR
    errors.name_path(folder, "--export_dir")  # WORKDIR/export too: moved by that flag.
    _refuse_folders_of_others(folder, workdir)
    _refuse_moved(workdir, identity)
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
    artifact = bytes(exported.serialize())
    # The artifact's digest, so that a model.json tells whether the model.jaxexport beside it
    # is its own (two files cannot be replaced at once: a write of the artifact that fails
    # leaves the new description beside the old artifact, and the command failing).
    info["model_sha256"] = hashlib.sha256(artifact).hexdigest()
    _refuse_moved(workdir, identity)
    if jax.process_index() == 0:  # One writer: every process holds the same model.
        # The description first: an export cut short between the two leaves a model.json
        # an export wrote, which the next takes over; an artifact alone, it refused as a
        # file no export wrote.
        files.write_atomically(folder / INFO_FILE, json.dumps(info, indent=1) + "\n")
        files.write_atomically(folder / MODEL_FILE, artifact)
    return folder


def _refuse_folders_of_others(folder: epath.Path, workdir: epath.Path) -> None:
    """Refuses an export folder whose files an export would replace but did not write (a
    user's own model.json), or that a run manages (its checkpoints, which it rotates away):
    each was written over, or deleted later, without a word.

    Raises:
      UserError: naming the folder and the fix.
    """
    checkpoints = checkpointing.runs_checkpoints_holding(folder, workdir)
    if checkpoints is not None:
        raise UserError(
            f"{folder}: inside the checkpoints of a run ({checkpoints}), which its runs rotate "
            "away; give another --export_dir"
        )
    info, model = folder / INFO_FILE, folder / MODEL_FILE
    if files.kind(folder) != "a folder":
        return  # What cannot be a folder, prepare_folder names.
    # A folder or a pipe at either name is named as what it is; neither there, nothing to
    # replace.
    has_info = files.require_kind(info, "a file")
    if not (has_info | files.require_kind(model, "a file")):
        return
    try:
        described = json.loads(files.read_text(info)) if has_info else None
    except (json.JSONDecodeError, UserError):
        described = None
    if not (isinstance(described, dict) and "params_fingerprint" in described):
        raise UserError(
            f"{folder}: holds {INFO_FILE} or {MODEL_FILE} that no export wrote, which this one "
            "would replace; give another --export_dir, or move them away"
        )


def _refuse_moved(workdir, identity: tuple[int, int] | None) -> None:
    """Refuses to write once the workdir was moved or removed since the export read it: its
    export/ folder was made again at the old name, holding a model of a run not there.

    Raises:
      UserError: naming the workdir.
    """
    if identity is not None and files.identity(workdir) != identity:
        raise UserError(
            f"{workdir}: moved or removed while it was exported; nothing was written; export "
            "it where it is now"
        )
