r"""Exercise 1 of d2l 5.2.4: change the number of hidden units; which is best? And why does
a single hidden unit fail?

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/width.py

The scratch MLP (one hidden layer, chapter settings, 10 epochs) at widths 1 to 4096,
3 seeds each, judged on 10,000 held-out training images. About 4 minutes on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment


def get_config():
    """Widths 1, 2, 4, ..., 4096 x 3 seeds."""
    config = ml_collections.ConfigDict()
    config.name = "width"
    config.question = "which hidden width is best, and why does 1 unit fail?"
    config.train = load_experiment("experiments/mlp_scratch.py")
    config.train.validation_size = 10_000
    config.sweep = {"num_hiddens": [2**i for i in range(13)], "seed": [0, 1, 2]}
    config.quick_sweep = {"num_hiddens": [1, 16, 256], "seed": [0, 1]}
    config.quick_num_epochs = 1
    config.x = "num_hiddens"
    config.plot = "line"
    return config
