r"""Exercise (d2l 5.2.4, 5.4): how does weight initialisation change training?

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/init.py

The scratch MLP (784-256-10, hand-written ReLU) with d2l's normal(0.01), normal(1.0), zeros
(every hidden unit stays identical: the symmetry problem), Glorot/Xavier uniform, He/Kaiming
normal and LeCun normal weights; zero biases; chapter settings, 10 epochs, 3 seeds.
About 1 minute on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment

INITS = [
    {"name": "normal(0.01)", "weight_init": "normal", "init_scale": 0.01},
    {"name": "normal(1.0)", "weight_init": "normal", "init_scale": 1.0},
    {"name": "zeros", "weight_init": "zeros", "init_scale": 0.0},
    {"name": "glorot", "weight_init": "glorot", "init_scale": 0.0},
    {"name": "he", "weight_init": "he", "init_scale": 0.0},
    {"name": "lecun", "weight_init": "lecun", "init_scale": 0.0},
]


def get_config():
    """6 initialisers x 3 seeds."""
    config = ml_collections.ConfigDict()
    config.name = "init"
    config.question = "how does the weight initialisation change training?"
    config.train = load_experiment("experiments/mlp_scratch.py")
    config.train.validation_size = 10_000
    config.sweep = {"init": INITS, "seed": [0, 1, 2]}
    config.quick_sweep = {"init": [INITS[0], INITS[2]], "seed": [0, 1]}
    config.quick_num_epochs = 1
    config.x = "init"
    config.plot = "bars"
    return config
