"""A gs:// workdir, without a network: every file of a run lands in a fake bucket.

The fake maps gs://BUCKET/... onto a temporary folder at the two places paths reach the
file system: etils.epath (through its own mocking, with the fsspec backend it uses where
TensorFlow is absent) and TensorStore, which writes Orbax's arrays (through Orbax's GCS
kvstore spec and its bucket-metadata look-up). The test runs from an empty working
directory, so a path that bypassed epath (pathlib, open) would show up there as a folder
named "gs:" instead of in the bucket.
"""

import json
import os

import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing
from helpers import study, tiny_config
from orbax.checkpoint._src.path import gcs_utils

from experiments.studies.exercises import run as exercises
from mlp_jax import checkpointing, train

PREFIX = "gs://"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """Yields the local folder that stands for gs://; the working directory is empty."""
    root = tmp_path / "gcs"
    root.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def to_local(path):
        path = os.fspath(path)
        return str(root / path.removeprefix(PREFIX)) if path.startswith(PREFIX) else path

    def to_remote(path, like):
        if not os.fspath(like).startswith(PREFIX):
            return path
        return PREFIX + os.path.relpath(os.fspath(path), root)

    def one_path(original, path, *args, **kwargs):
        return original(to_local(path), *args, **kwargs)

    def two_paths(original, source, target, *args, **kwargs):
        return original(to_local(source), to_local(target), *args, **kwargs)

    def glob(original, pattern):
        return [to_remote(found, pattern) for found in original(to_local(pattern))]

    def walk(original, top, **kwargs):
        for folder, subfolders, names in original(to_local(top), **kwargs):
            yield to_remote(folder, top), subfolders, names

    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath's TF-free backend.
    monkeypatch.setattr(
        gcs_utils, "get_kvstore_for_gcs", lambda path: {"driver": "file", "path": to_local(path)}
    )
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    single = ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat")
    with epath_testing.mock_epath(
        **dict.fromkeys(single, one_path),
        **dict.fromkeys(("copy", "rename", "replace"), two_paths),
        glob=glob,
        walk=walk,
    ):
        yield root
    assert not list(cwd.iterdir()), "a path bypassed etils.epath"


def test_train_resume_and_evaluate_in_a_bucket(fake_gcs, synthetic_dir):
    (fake_gcs / "bucket").mkdir()
    (fake_gcs / "bucket" / "data").symlink_to(synthetic_dir)
    workdir = "gs://bucket/run"
    config = tiny_config("gs://bucket/data", num_epochs=2, keep_checkpoints=1)
    train.train_and_evaluate(config, workdir)
    config.num_epochs = 3
    result = train.train_and_evaluate(config, workdir)
    assert [record["epoch"] for record in result.history] == [1, 2, 3]

    run = fake_gcs / "bucket" / "run"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["num_epochs"] == 3
    assert (run / "curves.png").stat().st_size > 10_000
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # One per process that ran.
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["3"]  # keep_checkpoints=1.

    evaluated = train.evaluate_workdir(workdir)
    assert evaluated["epoch"] == 3
    assert evaluated["params_fingerprint"] == checkpointing.params_fingerprint(result.state.params)


def test_exercise_results_in_a_bucket(fake_gcs, synthetic_dir):
    exercise = study("exercises/width")
    exercise.train.validation_size = 1_000
    exercise.train.data_dir = str(synthetic_dir)
    exercise.quick_sweep = {"num_hiddens": [8, 16], "seed": [0]}
    exercises.run_exercise(exercise, "gs://bucket/results", "gs://bucket/work", quick=True)
    results = fake_gcs / "bucket" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["width.json", "width.md", "width.png"]
    assert len(list((fake_gcs / "bucket" / "work" / "width").glob("*.json"))) == 2  # 2 shapes.
