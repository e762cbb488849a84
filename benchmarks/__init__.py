"""Benchmarks that compare mlp_jax with the code people would write instead."""
