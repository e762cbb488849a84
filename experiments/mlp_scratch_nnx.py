r"""The chapter's MLP from scratch, written with Flax NNX: W1, b1, W2, b2 as `nnx.Param`s.

The same model as experiments/mlp_scratch.py (d2l 5.2.1: 784-256-10, weights drawn from
normal(0, 0.01), zero biases, the hand-written ReLU), in the API Flax's documentation now
steers new users to. mlp_jax trains it through the same train step as the linen model (see
mlp_jax.models): given the same initial parameters, the training is bit for bit the same.

Run:
  python -m mlp_jax.main --config=experiments/mlp_scratch_nnx.py --workdir=runs/mlp_scratch_nnx
"""

import jax.numpy as jnp
from flax import nnx

from mlp_jax.config import load_experiment
from mlp_jax.models import activation_fn, weight_initializer


def relu(x):
    """ReLU written out, as the chapter does: max(x, 0)."""
    return jnp.maximum(x, 0)


class MLPScratch(nnx.Module):
    """An MLP whose weights W1, b1, W2, b2 (and more with depth) are explicit parameters."""

    def __init__(
        self,
        num_inputs: int = 784,
        num_hiddens: int = 256,
        num_outputs: int = 10,
        num_layers: int = 1,
        activation: str = "relu",
        weight_init: str = "normal",
        init_scale: float = 0.01,
        *,
        rngs: nnx.Rngs,
    ):
        self.act = relu if activation == "relu" else activation_fn(activation)
        w_init = weight_initializer(weight_init, init_scale)
        sizes = [num_inputs] + [num_hiddens] * num_layers + [num_outputs]
        self.depth = len(sizes) - 1
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            setattr(self, f"W{i}", nnx.Param(w_init(rngs.params(), (fan_in, fan_out))))
            setattr(self, f"b{i}", nnx.Param(jnp.zeros((fan_out,))))

    def __call__(self, x_BxD, train: bool = False):
        """Maps flattened images (B, 784) in [0, 1] to logits (B, num_outputs)."""
        del train  # No dropout in the chapter's model.
        h = x_BxD.reshape(x_BxD.shape[0], -1)
        for i in range(1, self.depth + 1):
            # The bias broadcast over the batch, written out.
            h = h @ getattr(self, f"W{i}")[...] + getattr(self, f"b{i}")[None, :]
            if i < self.depth:
                h = self.act(h)
        return h


def get_config():
    """d2l's settings for the scratch MLP (those of experiments/mlp_scratch.py)."""
    config = load_experiment("experiments/mlp_scratch.py")
    config.model = "experiments/mlp_scratch_nnx.py:MLPScratch"
    return config
