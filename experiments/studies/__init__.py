"""The studies: the chapter's exercises, the joint search, the best plain MLP, time to
accuracy and parity, each a command (`python -m experiments.studies.NAME.run`)."""

from mlp_jax import errors

# Before a study's module imports JAX: a JAX_* setting JAX refuses is one line.
errors.import_jax()
