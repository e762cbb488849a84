"""Benchmarks that compare mlp_jax with the code people would write instead."""

from mlp_jax import errors

# Before a benchmark's module imports JAX: a JAX_* setting JAX refuses is one line.
errors.import_jax()
