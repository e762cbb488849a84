"""Experiments: Flax models and the configs that train them (`--config=experiments/NAME.py`)."""
