"""The real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist)."""

import numpy as np

from experiments import mlp_scratch
from mlp_jax import data, train


def test_real_files_validate(real_data_dir):
    train_split, test_split = data.load_fashion_mnist(str(real_data_dir), use_tfds=False)
    assert train_split.images.shape == (60_000, 784) and test_split.images.shape == (10_000, 784)
    # Fashion-MNIST is balanced: 6,000 and 1,000 images of each class.
    np.testing.assert_array_equal(np.bincount(train_split.labels), [6_000] * 10)
    np.testing.assert_array_equal(np.bincount(test_split.labels), [1_000] * 10)


def test_scratch_mlp_reaches_80_percent_in_two_epochs(real_data_dir, tmp_path):
    config = mlp_scratch.get_config()
    config.data_dir = str(real_data_dir)
    config.num_epochs = 2
    result = train.train_and_evaluate(config, tmp_path)
    assert result.history[-1]["val_acc"] >= 0.80
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
