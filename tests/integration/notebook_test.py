"""The chapter notebook runs top to bottom (2 epochs per model) without a cell error, its
training drawn live, the scratch model past 80 % on the real data."""

import nbformat
from helpers import QUICK_COMPILE_XLA_FLAGS, ROOT, without_tensorflow_env
from nbclient import NotebookClient

from mlp_jax import writers


def test_notebook_executes(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_CHAPTER_EPOCHS", "2")
    monkeypatch.setenv("MLP_CHAPTER_WORKDIR", str(tmp_path))
    # The kernel runs without TensorFlow, TFDS, Keras and PyTorch, as on a machine without them.
    monkeypatch.setenv("PYTHONPATH", without_tensorflow_env()["PYTHONPATH"])
    # Its time is mostly compiling (33 s of the test with XLA's defaults, 19 with these).
    monkeypatch.setenv("XLA_FLAGS", QUICK_COMPILE_XLA_FLAGS)
    notebook = nbformat.read(ROOT / "experiments" / "mlp_chapter.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "203,530" in outputs or "203530" in outputs
    assert "mistakes in these 18 images" in outputs
    assert (tmp_path / "scratch" / "checkpoints").is_dir()
    # The chapter's scratch model, 2 epochs on the real data: past 80 % and still learning.
    records = writers.JsonlLog(tmp_path / "scratch" / "metrics.jsonl").read()
    assert records[-1]["val_acc"] >= 0.80
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # The live board: each of the two runs drew one figure (kept under its display id, and
    # redrawn in place after each epoch), with no other figure in that cell.
    (training,) = [c for c in notebook.cells if "train.train_and_evaluate(" in c.source]
    boards = [o for o in training.outputs if "image/png" in o.get("data", {})]
    assert len(boards) == 2, [o.get("output_type") for o in training.outputs]
    assert all(o.output_type == "display_data" for o in boards)
    assert list((tmp_path / "scratch").glob("events.out.tfevents.*"))
