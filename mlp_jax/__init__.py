"""mlp_jax: chapter 5.2 of Dive into Deep Learning (multilayer perceptrons) in JAX and Flax."""
