r"""The chapter's concise MLP, written with Flax NNX: `nnx.Linear` layers.

The same model as experiments/mlp_concise.py (d2l 5.2.2: Linear(256), ReLU, Linear(10) with
LeCun normal weights), in Flax NNX, with the same options (depth, activation, dropout,
LayerNorm, skips). mlp_jax trains it through the same train step as the linen model (see
mlp_jax.models): given the same initial parameters, the training is bit for bit the same.

Run:
  python -m mlp_jax.main --config=experiments/mlp_concise_nnx.py --workdir=runs/mlp_concise_nnx
"""

from flax import nnx

from mlp_jax.config import load_experiment
from mlp_jax.models import activation_fn, weight_initializer


class MLP(nnx.Module):
    """An MLP of `num_layers` Linear hidden layers and a Linear output layer."""

    def __init__(
        self,
        num_inputs: int = 784,
        num_hiddens: int = 256,
        num_outputs: int = 10,
        num_layers: int = 1,
        activation: str = "relu",
        weight_init: str = "lecun",
        init_scale: float = 0.01,
        dropout: float = 0.0,
        norm: str = "none",  # "layer": LayerNorm before each hidden activation.
        residual: bool = False,  # Skip connections around hidden layers of equal width.
        *,
        rngs: nnx.Rngs,
    ):
        self.act = activation_fn(activation)
        w_init = weight_initializer(weight_init, init_scale)
        widths = [num_inputs] + [num_hiddens] * num_layers
        self.hidden = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=w_init, rngs=rngs)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.norms = nnx.List(
            [
                nnx.LayerNorm(num_hiddens, rngs=rngs)
                for _ in range(num_layers if norm == "layer" else 0)
            ]
        )
        # The train step's dropout key reaches the module as its "dropout" stream (the bridge
        # builds the module's Rngs from the keys apply is given); initialising draws none.
        dropout_rngs = rngs if "dropout" in rngs else None
        self.dropout = nnx.Dropout(dropout, rngs=dropout_rngs) if dropout else None
        self.residual = residual
        self.out = nnx.Linear(widths[-1], num_outputs, kernel_init=w_init, rngs=rngs)

    def __call__(self, x_BxD, train: bool = False):
        """Maps flattened images (B, 784) in [0, 1] to logits (B, num_outputs)."""
        h = x_BxD.reshape(x_BxD.shape[0], -1)
        for i, layer in enumerate(self.hidden):
            y = layer(h)
            if self.norms:
                y = self.norms[i](y)
            y = self.act(y)
            if self.dropout is not None:
                y = self.dropout(y, deterministic=not train)
            h = h + y if self.residual and h.shape[-1] == y.shape[-1] else y
        return self.out(h)


def get_config():
    """d2l's settings for the concise MLP (those of experiments/mlp_concise.py)."""
    config = load_experiment("experiments/mlp_concise.py")
    config.model = "experiments/mlp_concise_nnx.py:MLP"
    return config
