"""The real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist)."""

import numpy as np

from experiments.studies.parity import run as parity
from experiments.studies.speedrun import run as speedrun
from mlp_jax import data


def test_real_files_validate(real_data_dir):
    train_split, test_split = data.load_fashion_mnist(str(real_data_dir), use_tfds=False)
    assert train_split.images.shape == (60_000, 784) and test_split.images.shape == (10_000, 784)
    # Fashion-MNIST is balanced: 6,000 and 1,000 images of each class.
    np.testing.assert_array_equal(np.bincount(train_split.labels), [6_000] * 10)
    np.testing.assert_array_equal(np.bincount(test_split.labels), [1_000] * 10)


def test_speedrun_and_parity_report_their_numbers(real_data_dir, tmp_path):
    # The two reports on tiny budgets: 2 seeds, 2 d2l epochs, no ports (PyTorch is absent).

    # Every recipe trained for one epoch (the 0.85 recipe's own length).
    results = speedrun.measure(seeds=2, d2l_epochs=2, ports=False, num_epochs=1)
    for recipe in results["recipes"].values():
        assert len(recipe["runs"]) == 2 and recipe["seconds"] > 0 and recipe["compile"] > 0
        assert [len(run["curve"]) for run in recipe["runs"]] == [1, 1]
        assert 0.8 < recipe["acc"]["mean"] < 0.9
    # A single seed of the recipe whose 10-seed mean is 0.85 (results/speedrun.md), run as a
    # user runs it (its own length); the command line validates on the test split, as the
    # chapter does.
    last_epoch = results["whole"][0.85]["line"]
    assert float(last_epoch.split("val_acc ")[1].split()[0]) >= 0.84, last_epoch
    report = speedrun.markdown(results, seeds=2)
    assert "| 0.85 | experiments/studies/speedrun/recipe_085.py |" in report
    speedrun.plot(results, tmp_path / "speedrun.png")
    assert (tmp_path / "speedrun.png").stat().st_size > 10_000

    table = parity.markdown({("scratch", "mlp_jax"): [0.84, 0.85, 0.86]})
    assert "| scratch | mlp_jax | 3 | 0.8500 | 0.0100 |" in table
    assert "| 0.853 | +0.30 | 1 of 3 |" in table
