r"""The joint hyperparameter search of d2l 5.2.4's last exercise (`make tune`).

  python -m experiments.studies.search.run --config=experiments/studies/search/joint_search.py

A plain MLP on the flattened image (experiments/mlp_concise.py: Dense layers, dropout) with
AdamW and a cosine schedule; the search draws depth, width, learning rate, weight decay,
dropout, label smoothing, activation and data augmentation (shifts, flips), and successive
halving (eta 3) trains 27 candidates for 2 epochs, the best 9 for 6, the best 3 for 18. The
winner is then trained for `final_epochs` on all 60,000 images. Width is fixed at 1024 and
the batch at 256: on the 2-core CPU, 2048-wide candidates cost 3-5 times more per epoch and
the evidence (2x1024 reached 0.894, 2x2048 0.893) does not favour them. About 15 minutes of
search on a 2-core CPU.
"""

import ml_collections

from mlp_jax.config import load_experiment


def get_config():
    """The search space, the budget and the quick variant for CI."""
    config = ml_collections.ConfigDict()
    # The first line of the experiment file written for the winner.
    config.title = "The best plain MLP that `make tune` found (successive halving)."
    train = load_experiment("experiments/mlp_concise.py")
    train.validation_size = 10_000
    train.optimizer = "adamw"
    train.schedule = "cosine"
    train.warmup_epochs = 1
    train.momentum = 0.9
    config.train = train
    config.space = {
        "num_layers": [2, 3],
        "num_hiddens": [1024],
        "lr": [5e-4, 1e-3, 2e-3],
        "weight_decay": [0.01, 0.05, 0.1],
        "dropout": [0.1, 0.2, 0.3, 0.4],
        "label_smoothing": [0.0, 0.1],
        "activation": ["relu", "gelu", "silu"],
        "augment_shift": [1, 2],
        "augment_flip": [False, True],
    }
    config.num_candidates = 27
    config.rungs = [2, 6, 18]
    config.eta = 3
    # Epochs the winner trains for in experiments/studies/search/mlp_tuned.py (longer than
    # the last rung).
    config.final_epochs = 60
    config.seed = 0
    config.quick_space = {"num_hiddens": [16, 64], "lr": [1e-4, 3e-3], "dropout": [0.0, 0.2]}
    config.quick_num_candidates = 4
    config.quick_rungs = [1, 2]
    config.quick_final_epochs = 2
    return config
