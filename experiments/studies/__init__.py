"""The studies: the chapter's exercises, the joint search, the best plain MLP, time to
accuracy and parity, each a command (`python -m experiments.studies.NAME.run`)."""

from mlp_jax import errors

# Before a study's module imports JAX, or matplotlib: a JAX_* setting JAX refuses, or a
# MPLBACKEND matplotlib does not know, is one line.
errors.import_jax()
errors.check_plot_backend()
