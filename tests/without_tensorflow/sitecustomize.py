"""Hides TensorFlow, TFDS, Keras and PyTorch (and $MLP_JAX_TEST_HIDE) from a process whose
PYTHONPATH starts with this folder, as if they were not installed (`importlib.util.find_spec`
finds nothing, `import` raises ModuleNotFoundError). The tests run the training path this way
to prove that it never needs them, whatever the environment holds."""

import os
import sys

# $MLP_JAX_TEST_HIDE (comma-separated) hides more, e.g. "gcsfs" for a machine without the
# gcs extra.
HIDDEN = (
    "tensorflow",
    "tensorflow_datasets",
    "keras",
    "tf_keras",
    "torch",
    *filter(None, os.environ.get("MLP_JAX_TEST_HIDE", "").split(",")),
)


class _HidingFinder:
    """Wraps one of Python's module finders; finds nothing for the hidden packages."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN or not hasattr(self._finder, "find_spec"):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [_HidingFinder(finder) for finder in sys.meta_path]
