"""Command line: train an experiment; evaluate, use or export a trained workdir.

  python -m mlp_jax.main --config=experiments/mlp_scratch.py --workdir=runs/scratch \
      [--config.lr=0.05 ...]
  python -m mlp_jax.main --mode=eval --workdir=runs/scratch [--data_dir=FOLDER]
  python -m mlp_jax.main --mode=predict --workdir=runs/scratch shirt.png bag.jpg batch.npy
  python -m mlp_jax.main --mode=export --workdir=runs/scratch [--export_dir=FOLDER]

This file is intentionally kept short: all logic is importable from mlp_jax.train.
"""

import json
import os
import sys
import warnings

from absl import flags, logging
from ml_collections import config_flags

from mlp_jax import config as config_lib
from mlp_jax import errors

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """The command line's flags (defined by `errors.run_command`: defining --config reads
    the --flagfile files already, whose faults are then one line)."""
    flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and plots.")
    flags.DEFINE_enum(
        "mode",
        "train",
        ["train", "eval", "predict", "export"],
        "train: train (or resume); eval: test a workdir; predict: classify the image files "
        "given after the flags; export: write the model as a jax.export artifact.",
    )
    flags.DEFINE_string("export_dir", None, "export: where to write; default WORKDIR/export.")
    flags.DEFINE_string(
        "data_dir", None, "eval: the IDX folder, if not the one the run was trained from."
    )
    config_flags.DEFINE_config_file(
        "config", None, "Experiment file, e.g. experiments/mlp_scratch.py.", lock_config=True
    )


def _enable_compilation_cache() -> None:
    """Keeps compiled programs on disk so that a second run skips compilation.

    The folder is $MLP_JAX_COMPILATION_CACHE, default ~/.cache/mlp_jax/xla; "" disables it.
    The cache only saves time: a local one that cannot be a folder this process writes (a
    file there, a read-only home, no home at all) is passed over, where JAX would warn at
    every compilation, and so is one that fails later.
    """
    import jax  # noqa: PLC0415

    from mlp_jax import files  # noqa: PLC0415

    path = files.expand_home(os.environ.get("MLP_JAX_COMPILATION_CACHE", "~/.cache/mlp_jax/xla"))
    if path and "://" in path:
        try:
            cache = files.as_path(path)  # Its scheme checked; a bucket's waits bounded.
            seconds = errors.bucket_timeout_seconds()
        except errors.UserError:
            return
        # Every program's compilation reads and writes it: each request to a silent bucket
        # would cost minutes of retries (an hour a run), each to a healthy one milliseconds.
        if not files.answers_within(cache, seconds):
            logging.warning(
                "the compilation cache %s did not answer within %g s ($%s); going on without it",
                path,
                seconds,
                errors.BUCKET_TIMEOUT_VARIABLE,
            )
            return
    elif path:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return
        if not os.access(path, os.W_OK | os.X_OK):
            return
        # JAX opens its entries unchecked: a named pipe there held the run for ever.
        if odd := files.first_entry_of_no_file(path):
            logging.warning("the compilation cache %s holds %s; going on without it", path, odd)
            return
    if path:
        # A cache that fails later (a disk filled, a bucket gone) warned at every program.
        warnings.filterwarnings(
            "ignore", "Error (reading|writing) persistent compilation cache entry", UserWarning
        )
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(arguments: list[str]) -> None:
    """Runs the mode the flags ask for on the `arguments` after them (--mode=predict's files);
    user errors become one line and a non-zero exit."""
    if arguments and FLAGS.mode != "predict":
        errors.fail(f"unexpected arguments {arguments}; settings go in --config.KEY=VALUE")
    if not FLAGS.workdir:
        errors.fail("--workdir is required")
    if FLAGS.data_dir and FLAGS.mode != "eval":
        errors.fail(
            f"--data_dir is for --mode=eval, not --mode={FLAGS.mode}"
            + ("; a training run takes --config.data_dir" if FLAGS.mode == "train" else "")
        )
    if FLAGS.export_dir and FLAGS.mode != "export":
        errors.fail("--export_dir is for --mode=export")
    if FLAGS["config"].present and FLAGS.mode != "train":  # Its overrides were passed over.
        errors.fail(
            f"--config is for --mode=train; --mode={FLAGS.mode} reads the config the run "
            "saved (WORKDIR/config.json)"
        )
    # Imported here so that flag errors are reported before Flax and Orbax are imported.
    from mlp_jax import files, metrics, parallel, progress, train  # noqa: PLC0415

    config = None
    if FLAGS.mode == "train":
        config = config_lib.flag_config(FLAGS["config"], "experiments/mlp_scratch.py")
    for flag in ("workdir", "export_dir", "data_dir"):
        if FLAGS[flag].value:
            errors.name_path(files.as_path(FLAGS[flag].value), f"--{flag}")
    if config is not None and config.data_dir:
        errors.name_path(files.as_path(config.data_dir), "--config.data_dir")
    _enable_compilation_cache()
    parallel.start_runtime()
    if FLAGS.mode == "eval":
        # Valid JSON, which has no NaN: a model whose evaluation gives none is null there.
        evaluated = metrics.json_safe(train.evaluate_workdir(FLAGS.workdir, FLAGS.data_dir))
        progress.emit(json.dumps(evaluated, allow_nan=False))
    elif FLAGS.mode == "predict":
        from mlp_jax import predict  # noqa: PLC0415

        lines, unreadable = predict.classify(FLAGS.workdir, arguments)
        for line in lines:
            progress.emit(line)
        for line in unreadable:
            errors.error_line(line)
        if unreadable:
            sys.exit(1)
    elif FLAGS.mode == "export":
        from mlp_jax import export  # noqa: PLC0415

        progress.emit(f"exported to {export.export_workdir(FLAGS.workdir, FLAGS.export_dir)}")
    else:
        train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
    errors.run_command(main, _define_flags, arguments=True)
