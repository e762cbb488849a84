r"""The search for the best plain MLP (issue 15): augmentation, averaging and regularisation.

  python -m mlp_jax.tune --config=experiments/best_search.py --results_dir=results/best \
      --workdir=runs/best_search --tuned_config=experiments/mlp_best.py

It starts from the joint search's winner (experiments/mlp_tuned.py: 3 x 1024 GELU, AdamW 2e-3
with weight decay 0.05, cosine schedule) with an exponential moving average of the weights,
and draws the ingredients that regularise an MLP, which has no image prior of its own: shifts
of 1 or 2 pixels, random erasing, MixUp and CutMix (both on: one of them per batch), label
smoothing and dropout. Successive halving (eta 3) trains 9 candidates for 12 epochs and the
best 3 for 24, on 50,000 training images, judged on 10,000 held out; the test split is not
read. The winner then trains for `final_epochs` on all 60,000 images. Sized for one session
on the 2-core CPU (42 minutes of training there on 2026-11-29, about 11 s per candidate-epoch);
these short rungs favoured the weakest regularisation (README, "The best plain MLP"), so a
machine with a GPU should search with rungs of tens to hundreds of epochs.
"""

import ml_collections

from experiments import mlp_tuned


def get_config():
    """The search space, the budget and the quick variant for CI."""
    config = ml_collections.ConfigDict()
    # The first line of the experiment file written for the winner.
    config.title = "The best plain MLP (issue 15): the winner of experiments/best_search.py."
    train = mlp_tuned.get_config()
    train.validation_size = 10_000
    # A moving average over about 1,000 steps (5 epochs at batch 256): long enough to smooth,
    # short enough to follow the schedule at the shortest rung.
    train.ema_decay = 0.999
    config.train = train
    config.space = {
        "augment_shift": [1, 2],
        "augment_erase": [0.0, 0.25, 0.5],
        "mixup_alpha": [0.0, 0.2],
        "cutmix_alpha": [0.0, 1.0],
        "label_smoothing": [0.0, 0.1],
        "dropout": [0.1, 0.2],
    }
    config.num_candidates = 9
    config.rungs = [12, 24]
    config.eta = 3
    # Epochs the winner trains for in experiments/mlp_best.py: longer than the last rung, as
    # heavily regularised MLPs still gain after it, and within 15 minutes on the 2-core CPU.
    config.final_epochs = 40
    config.seed = 0
    config.quick_space = {"augment_erase": [0.0, 0.5], "mixup_alpha": [0.0, 0.4]}
    config.quick_num_candidates = 3
    config.quick_rungs = [1, 2]
    config.quick_final_epochs = 2
    return config
