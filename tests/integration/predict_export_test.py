"""Using a trained workdir: `--mode=predict` on image files and `--mode=export`'s artifact
served by a process that has JAX alone. The model is the NNX scratch MLP trained 2 epochs on
the real Fashion-MNIST (so the classes it gives can be checked against the labels)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli, tree_listing
from PIL import Image

from mlp_jax import data

# Test images of classes the model knows well after 2 epochs, by their index in the split.
EASY_CLASSES = ("trouser", "bag", "sneaker")

SERVE = """
import json, sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
info = json.load(open(sys.argv[2]))
pixels = np.load(sys.argv[3]).reshape(-1, 784)  # As model.json says.
probabilities = np.asarray(exported.call(pixels))
assert not any(m.split(".")[0] in ("flax", "mlp_jax") for m in sys.modules), "imported"
print(json.dumps({
    "classes": [info["class_names"][i] for i in probabilities.argmax(-1)],
    "top": probabilities.max(-1).tolist(),
}))
"""


@pytest.fixture(scope="module")
def trained(real_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nnx") / "run"
    result = run_cli(
        "--config=experiments/mlp_scratch_nnx.py",
        f"--config.data_dir={real_data_dir}",
        "--config.num_epochs=2",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr
    _, test = data.load_fashion_mnist(str(real_data_dir), use_tfds=False)
    return workdir, test


def _first_of_class(test, name: str) -> int:
    return int(np.flatnonzero(test.labels == data.CLASS_NAMES.index(name))[0])


def test_predict_gives_the_classes_of_image_files_and_one_line_for_a_broken_one(trained, tmp_path):
    workdir, test = trained
    paths = []
    # As Fashion-MNIST stores it; upscaled in colour; a JPEG of another size.
    for name, size, mode, suffix in zip(
        EASY_CLASSES, (28, 112, 60), ("L", "RGB", "L"), (".png", ".png", ".jpg"), strict=True
    ):
        image = Image.fromarray(test.images[_first_of_class(test, name)].reshape(28, 28))
        paths.append(tmp_path / f"{name}{suffix}")
        image.convert(mode).resize((size, size)).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n then nothing of an image")
    before = tree_listing(workdir)

    result = run_cli("--mode=predict", f"--workdir={workdir}", *map(str, [*paths, broken]))
    assert_one_line_error(result, "broken.png: cannot be classified", "not an image")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout
    for line, path, name in zip(lines, paths, EASY_CLASSES, strict=True):
        assert line.startswith(f"{path}: {name} "), line
        assert line.count("(then ") == 1 and line.count(", ") == 1  # The next two classes.
    assert tree_listing(workdir) == before  # Read-only.


def test_the_export_serves_the_predictions_of_predict_without_mlp_jax_or_flax(trained, tmp_path):
    workdir, test = trained
    batch = tmp_path / "batch.npy"
    np.save(batch, test.images[:64].reshape(64, 28, 28))
    exported = run_cli("--mode=export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'e'}")
    assert exported.returncode == 0, exported.stderr
    info = json.loads((tmp_path / "e" / "model.json").read_text())
    assert info["class_names"] == list(data.CLASS_NAMES) and info["epoch"] == 2
    artifact = (tmp_path / "e" / "model.jaxexport").read_bytes()
    assert info["model_sha256"] == hashlib.sha256(artifact).hexdigest()
    again = run_cli("--mode=export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'e'}")
    assert again.returncode == 0, again.stderr  # Its own earlier export is replaced.

    (tmp_path / "serve.py").write_text(SERVE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    served = subprocess.run(
        [sys.executable, "serve.py", "e/model.jaxexport", "e/model.json", str(batch)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert served.returncode == 0, served.stderr
    served = json.loads(served.stdout.strip().splitlines()[-1])

    predicted = run_cli("--mode=predict", f"--workdir={workdir}", str(batch))
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.strip().splitlines()
    assert [line.split(": ")[1].rsplit(" (then")[0].rsplit(" ", 1)[0] for line in lines] == served[
        "classes"
    ]
    for line, top in zip(lines, served["top"], strict=True):
        assert line.split(" (then")[0].endswith(f" {top:.3f}")
    # The model is a trained one: most of the 64 classes are the labels.
    labels = [data.CLASS_NAMES[i] for i in test.labels[:64]]
    assert np.mean(np.array(served["classes"]) == np.array(labels)) > 0.7


def test_predict_and_export_refuse_what_they_cannot_use_in_one_line(trained, tmp_path):
    workdir, _ = trained
    assert_one_line_error(
        run_cli("--mode=predict", f"--workdir={workdir}"), "--mode=predict needs image files"
    )
    assert_one_line_error(
        run_cli("--mode=predict", f"--workdir={tmp_path}", "x.png"), "config.json: missing"
    )
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(
        run_cli("--mode=export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'a_file'}"),
        "--export_dir=",
        "is a file, not a folder",
    )
    assert_one_line_error(run_cli("--mode=eval", f"--workdir={workdir}", "x.png"), "unexpected")
    # A folder of the user's own files, and the run's checkpoints: each was written into
    # without a word (a user's model.json replaced; an export a later run rotated away).
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.json").write_text('{"my": "notes"}')
    other_run = tmp_path / "other_run"  # Another run's: refused only for the exported one's.
    (other_run / "checkpoints").mkdir(parents=True)
    (other_run / "config.json").write_text('{"model": "experiments/mlp_concise.py:MLP"}')
    (tmp_path / "link").symlink_to(workdir / "checkpoints")  # Accepted through a link.
    before = tree_listing(workdir)
    for folder, fragment in (
        (mine, "holds model.json or model.jaxexport that no export wrote"),
        (workdir / "checkpoints" / "2", "inside the checkpoints of a run"),
        (other_run / "checkpoints" / "2", f"a run ({other_run / 'checkpoints'})"),
        (tmp_path / "link" / "7", f"a run ({workdir / 'checkpoints'})"),
    ):
        exported = run_cli("--mode=export", f"--workdir={workdir}", f"--export_dir={folder}")
        assert_one_line_error(exported, fragment, "give another --export_dir")
    assert (mine / "model.json").read_text() == '{"my": "notes"}'
    assert tree_listing(workdir) == before


@pytest.mark.parametrize("refused", ["model.json", "model.jaxexport"])
def test_an_export_cut_short_between_its_files_is_taken_over_by_the_next(
    trained, tmp_path, refused
):
    # A pipe at one file's temporary name fails the export after or before the other file
    # is written: the artifact written alone was refused by every later export, as a file
    # "no export wrote".
    workdir, _ = trained
    folder = tmp_path / "export"
    folder.mkdir()
    os.mkfifo(folder / f".{refused}.tmp")
    export = ("--mode=export", f"--workdir={workdir}", f"--export_dir={folder}")
    assert_one_line_error(run_cli(*export), f".{refused}.tmp is a named pipe")
    os.remove(folder / f".{refused}.tmp")
    again = run_cli(*export)
    assert again.returncode == 0, again.stderr
    info = json.loads((folder / "model.json").read_text())
    assert (
        info["model_sha256"]
        == hashlib.sha256((folder / "model.jaxexport").read_bytes()).hexdigest()
    )
