"""The TensorFlow-free TensorBoard writer: clu's interface, files TensorBoard reads back."""

import importlib.util
import inspect
import itertools
from pathlib import Path

import clu
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from mlp_jax import writers


def _clu_metric_writer_interface():
    """clu's MetricWriter ABC, loaded from its file: importing it as clu.metric_writers.interface
    would run that package's __init__, which imports TensorFlow."""
    path = Path(clu.__file__).parent / "metric_writers" / "interface.py"
    spec = importlib.util.spec_from_file_location("clu_metric_writer_interface", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MetricWriter


def test_writer_has_every_method_of_clus_interface_with_its_parameters():
    interface = _clu_metric_writer_interface()
    assert interface.__abstractmethods__  # The interface was really read.
    for name in interface.__abstractmethods__:
        ours = inspect.signature(getattr(writers.TensorBoardWriter, name))
        theirs = inspect.signature(getattr(interface, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def _read_back(logdir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0}
    )
    return accumulator.Reload()


def test_tensorboard_reads_what_the_writer_wrote(tmp_path):
    writer = writers.TensorBoardWriter(tmp_path)
    for step in (1, 2, 3):
        writer.write_scalars(step, {"val_acc": 0.5 + step / 10, "train_loss": np.float32(1 / step)})
    writer.write_histograms(3, {"weights": np.arange(100.0)}, num_buckets={"weights": 5})
    writer.write_images(3, {"digit": np.full((28, 28, 1), 200, np.uint8)})
    writer.write_texts(3, {"note": "epoch **three**"})
    writer.write_hparams({"lr": 0.1, "model": "MLP", "schedule": None})
    writer.close()

    (events_file,) = tmp_path.glob("events.out.tfevents.*")
    assert events_file == writer.path
    run = _read_back(tmp_path)
    assert [(e.step, round(e.value, 6)) for e in run.Scalars("val_acc")] == [
        (1, 0.6),
        (2, 0.7),
        (3, 0.8),
    ]
    assert [e.value for e in run.Scalars("train_loss")] == pytest.approx([1, 0.5, 1 / 3])
    histogram = run.Histograms("weights")[0].histogram_value
    assert histogram.num == 100 and histogram.max == 99 and list(histogram.bucket) == [20] * 5
    image = run.Images("digit")[0]
    assert (image.width, image.height) == (28, 28) and image.encoded_image_string[:4] == b"\x89PNG"
    note = run.Tensors("note")[0].tensor_proto.string_val[0]
    assert note == b"epoch **three**"
    assert "_hparams_/session_start_info" in run.Tags()["tensors"]


def test_each_flush_leaves_a_complete_file(tmp_path):
    writer = writers.TensorBoardWriter(tmp_path)
    writer.write_scalars(1, {"loss": 1.0})
    writer.flush()
    assert [e.step for e in _read_back(tmp_path).Scalars("loss")] == [1]
    writer.write_scalars(2, {"loss": 0.5})
    writer.flush()
    assert [e.step for e in _read_back(tmp_path).Scalars("loss")] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))


class _Recorder:
    def __init__(self):
        self.calls = []

    def write_scalars(self, step, scalars):
        if step < 0:
            raise ValueError("negative step")
        self.calls.append(("scalars", step))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


def test_background_writer_keeps_order_and_closes_after_the_last_write():
    recorder = _Recorder()
    background = writers.BackgroundWriter(recorder)
    for step in range(5):
        background.write_scalars(step, {"loss": step})
    background.close()
    expected = [call for step in range(5) for call in (("scalars", step), ("flush",))]
    assert recorder.calls == [*expected, ("close",)]


def test_background_writer_raises_a_failed_write_on_close():
    recorder = _Recorder()
    background = writers.BackgroundWriter(recorder)
    background.write_scalars(-1, {"loss": 0})
    with pytest.raises(ValueError, match="negative step"):
        background.close()
    assert recorder.calls[-1] == ("close",)


@pytest.mark.parametrize("made_before", [0, 9])
def test_writers_made_in_the_same_second_write_their_own_files(tmp_path, monkeypatch, made_before):
    # The ninth and tenth writers of a process: their files were read back in the wrong
    # order (".10" before ".9"), seen once in the full tier.
    monkeypatch.setattr(writers, "_WRITERS_MADE", itertools.count(made_before))
    first, second = writers.TensorBoardWriter(tmp_path), writers.TensorBoardWriter(tmp_path)
    first.write_scalars(1, {"loss": 1.0})
    second.write_scalars(2, {"loss": 0.5})
    first.close()
    second.close()
    assert first.path != second.path
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert [e.step for e in _read_back(tmp_path).Scalars("loss")] == [1, 2]
