r"""Exercise 2 of d2l 5.2.4: add hidden layers; how does depth change the result?

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/depth.py

The concise MLP (nn.Dense layers, LeCun-normal weights, so that depth is not confounded by
the scratch model's tiny normal(0.01) weights) with 1 to 5 hidden layers of 256 units,
chapter settings, 10 epochs, 3 seeds. About 2 minutes on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment


def get_config():
    """1 to 5 hidden layers of 256 units x 3 seeds."""
    config = ml_collections.ConfigDict()
    config.name = "depth"
    config.question = "how does the number of hidden layers change accuracy?"
    config.train = load_experiment("experiments/mlp_concise.py")
    config.train.validation_size = 10_000
    config.sweep = {"num_layers": [1, 2, 3, 4, 5], "seed": [0, 1, 2]}
    config.quick_sweep = {"num_layers": [1, 3], "seed": [0, 1]}
    config.quick_num_epochs = 1
    config.x = "num_layers"
    config.plot = "line"
    return config
