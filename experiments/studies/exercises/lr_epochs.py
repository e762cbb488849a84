r"""Exercise 3 of d2l 5.2.4: how do the learning rate and the number of epochs interact?

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/lr_epochs.py

The scratch MLP with SGD at learning rates 0.001 to 3 (log grid), 3 seeds each, trained 50
epochs with validation after every epoch; with a constant rate, epoch e of a 50-epoch run is
a run of e epochs, so one sweep gives every epoch budget. About 5 minutes on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment


def get_config():
    """8 learning rates x 3 seeds x 50 epochs."""
    config = ml_collections.ConfigDict()
    config.name = "lr_epochs"
    config.question = "which learning rate is best for each epoch budget?"
    config.train = load_experiment("experiments/mlp_scratch.py")
    config.train.validation_size = 10_000
    config.train.num_epochs = 50
    config.sweep = {"lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "seed": [0, 1, 2]}
    config.quick_sweep = {"lr": [0.01, 0.1, 1.0], "seed": [0, 1]}
    config.quick_num_epochs = 2
    config.x = "lr"
    config.plot = "curves"
    return config
