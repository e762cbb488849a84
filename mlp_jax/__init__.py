"""mlp_jax: chapter 5.2 of Dive into Deep Learning (multilayer perceptrons) in JAX and Flax."""

from mlp_jax import starting as _starting

if _starting.a_command_of_this_project_starts():  # Before the first import of a dependency.
    _starting.stop_at_once_while_starting()
    _starting.explain_missing_dependencies()
