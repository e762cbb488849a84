"""Training runs where TensorFlow, TFDS, Keras and PyTorch are absent: the folder that hides
them from the tests' processes really hides them."""

import os
import subprocess
import sys

from helpers import ROOT, WITHOUT_TENSORFLOW


def test_hidden_packages_really_are_hidden(tmp_path):
    """The TF-free tests run with tests/without_tensorflow first on PYTHONPATH; they prove
    nothing unless it hides TensorFlow, TFDS, Keras and PyTorch from that process. Stand-ins
    for all four are put on the path too, so this holds whether or not they are installed."""
    for name in ("tensorflow", "tensorflow_datasets", "keras", "torch"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    probe = (
        "import importlib.util, sys\n"
        "for name in ('tensorflow', 'tensorflow_datasets', 'keras', 'torch'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    sys.exit(f'{name} was imported')\n"
        "import mlp_jax.train, mlp_jax.sweep, mlp_jax.writers, clu.metrics\n"
    )
    path = os.pathsep.join([str(WITHOUT_TENSORFLOW), str(tmp_path), str(ROOT)])
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
