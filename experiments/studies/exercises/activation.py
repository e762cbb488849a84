r"""Exercise (d2l 5.2.4, 5.1): which activation function works best?

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/activation.py

The concise MLP (784-256-10, LeCun-normal weights) with eight activations, chapter settings,
10 epochs, 3 seeds. About 2 minutes on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment
from mlp_jax.models import ACTIVATIONS


def get_config():
    """8 activations x 3 seeds."""
    config = ml_collections.ConfigDict()
    config.name = "activation"
    config.question = "which activation function works best?"
    config.train = load_experiment("experiments/mlp_concise.py")
    config.train.validation_size = 10_000
    config.sweep = {"activation": list(ACTIVATIONS), "seed": [0, 1, 2]}
    config.quick_sweep = {"activation": ["relu", "sigmoid"], "seed": [0, 1]}
    config.quick_num_epochs = 1
    config.x = "activation"
    config.plot = "bars"
    return config
