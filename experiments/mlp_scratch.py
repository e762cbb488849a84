r"""The chapter's MLP from scratch: parameters made with `self.param`, a hand-written ReLU.

d2l 5.2.1: 784-256-10, weights drawn from normal(0, 0.01), zero biases, SGD with lr 0.1,
batch 256, 10 epochs. d2l reports validation accuracy 0.853.

Run:
  python -m mlp_jax.main --config=experiments/mlp_scratch.py --workdir=runs/mlp_scratch

Expected: test accuracy 0.842 after 10 epochs as a mean over 30 seeds, single runs from 0.82
to 0.85 (results/parity.md); about 6 s of training on a 2-core CPU.
"""

import flax.linen as nn
import jax.numpy as jnp

from mlp_jax.config import base_config
from mlp_jax.models import activation_fn, weight_initializer


def relu(x):
    """ReLU written out, as the chapter does: max(x, 0)."""
    return jnp.maximum(x, 0)


class MLPScratch(nn.Module):
    """An MLP whose weights W1, b1, W2, b2 (and more with depth) are explicit parameters."""

    num_inputs: int = 784
    num_hiddens: int = 256
    num_outputs: int = 10
    num_layers: int = 1  # Hidden layers; the chapter has one.
    activation: str = "relu"
    weight_init: str = "normal"
    init_scale: float = 0.01

    @nn.compact
    def __call__(self, x_BxD, train: bool = False):
        """Maps flattened images (B, 784) in [0, 1] to logits (B, num_outputs)."""
        del train  # No dropout in the chapter's model.
        act = relu if self.activation == "relu" else activation_fn(self.activation)
        w_init = weight_initializer(self.weight_init, self.init_scale)
        sizes = [self.num_inputs] + [self.num_hiddens] * self.num_layers + [self.num_outputs]
        h = x_BxD.reshape(x_BxD.shape[0], -1)
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            w = self.param(f"W{i}", w_init, (fan_in, fan_out))
            b = self.param(f"b{i}", nn.initializers.zeros, (fan_out,))
            h = h @ w + b[None, :]  # The bias broadcast over the batch, written out.
            if i < len(sizes) - 1:
                h = act(h)
        return h


def get_config():
    """d2l's settings for the scratch MLP (each field's meaning: docs/config.md)."""
    config = base_config()
    config.model = "experiments/mlp_scratch.py:MLPScratch"
    config.num_hiddens = 256
    config.num_outputs = 10
    config.num_layers = 1
    config.activation = "relu"  # The hand-written one above.
    config.weight_init = "normal"
    config.init_scale = 0.01  # d2l's standard deviation.
    return config
