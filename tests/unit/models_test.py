"""The chapter's two models: parameter count, equivalence, building from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, experiment

from mlp_jax import config as config_lib
from mlp_jax import models
from mlp_jax.errors import UserError

mlp_scratch, mlp_concise = experiment("mlp_scratch"), experiment("mlp_concise")


def _count(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize("module", [mlp_scratch, mlp_concise])
def test_chapter_models_have_203530_parameters(module):
    model = models.build_model(module.get_config())
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    assert _count(params) == 784 * 256 + 256 + 256 * 10 + 10 == 203_530


def test_scratch_parameters_are_named_and_initialised_as_in_d2l():
    model = models.build_model(mlp_scratch.get_config())
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    assert set(params) == {"W1", "b1", "W2", "b2"}
    assert params["W1"].shape == (784, 256) and params["W2"].shape == (256, 10)
    assert float(jnp.abs(params["b1"]).max()) == 0.0 == float(jnp.abs(params["b2"]).max())
    assert abs(float(params["W1"].std()) - 0.01) < 0.0005


def test_hand_written_relu():
    x = jnp.array([-2.0, -0.0, 0.0, 3.5])
    np.testing.assert_array_equal(mlp_scratch.relu(x), jnp.array([0.0, 0.0, 0.0, 3.5]))


@pytest.mark.parametrize("num_layers", [1, 3])
def test_scratch_and_concise_compute_the_same_logits_from_the_same_weights(num_layers):
    scratch = mlp_scratch.MLPScratch(num_hiddens=64, num_layers=num_layers)
    concise = mlp_concise.MLP(num_hiddens=64, num_layers=num_layers)
    x = jax.random.uniform(jax.random.key(1), (5, 784))
    scratch_params = scratch.init(jax.random.key(2), x)["params"]
    concise_params = {
        f"Dense_{i}": {"kernel": scratch_params[f"W{i + 1}"], "bias": scratch_params[f"b{i + 1}"]}
        for i in range(num_layers + 1)
    }
    np.testing.assert_allclose(
        scratch.apply({"params": scratch_params}, x),
        concise.apply({"params": concise_params}, x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_depth_and_activation_come_from_the_config():
    config = mlp_concise.get_config()
    config.num_layers, config.activation, config.num_hiddens = 3, "tanh", 16
    model = models.build_model(config)
    assert (model.num_layers, model.activation, model.num_hiddens) == (3, "tanh", 16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    assert len(params) == 4


@pytest.mark.parametrize("name", sorted(models.INITIALIZERS))
def test_every_initializer_builds(name):
    model = mlp_scratch.MLPScratch(num_hiddens=8, weight_init=name, init_scale=1.0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    assert bool(jnp.all(params["W1"] == 0)) == (name == "zeros")


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="config.activation='swish2' is unknown"):
        models.activation_fn("swish2")
    config = mlp_concise.get_config()
    config.model = "experiments/mlp_concise.py:NoSuchModel"
    with pytest.raises(UserError, match="cannot be loaded"):
        models.build_model(config)


def test_layer_norm_and_skip_connections():
    x = jax.random.uniform(jax.random.key(1), (4, 784))
    plain = mlp_concise.MLP(num_hiddens=16, num_layers=3)
    params = plain.init(jax.random.key(0), x)["params"]
    residual = mlp_concise.MLP(num_hiddens=16, num_layers=3, residual=True)

    def dense(h, name):
        return h @ params[name]["kernel"] + params[name]["bias"][None, :]

    # The same weights; the skips add each hidden layer's input from the second layer on.
    h = jax.nn.relu(dense(x, "Dense_0"))
    for name in ("Dense_1", "Dense_2"):
        h = h + jax.nn.relu(dense(h, name))
    expected = dense(h, "Dense_3")
    np.testing.assert_allclose(
        residual.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6
    )
    normed = mlp_concise.MLP(num_hiddens=16, num_layers=3, norm="layer")
    normed_params = normed.init(jax.random.key(0), x)["params"]
    assert {"LayerNorm_0", "LayerNorm_1", "LayerNorm_2"} <= set(normed_params)
    # LayerNorm before the activation: scaling a layer's weights and bias changes nothing.
    scaled = dict(normed_params)
    scaled["Dense_1"] = jax.tree.map(lambda p: 3.0 * p, normed_params["Dense_1"])
    np.testing.assert_allclose(
        normed.apply({"params": scaled}, x),
        normed.apply({"params": normed_params}, x),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not np.allclose(
        plain.apply(
            {"params": {**params, "Dense_1": jax.tree.map(lambda p: 3 * p, params["Dense_1"])}}, x
        ),
        plain.apply({"params": params}, x),
    )


def test_a_model_file_is_loaded_once_however_its_path_is_spelt(monkeypatch):
    relative = mlp_concise.get_config()
    absolute = mlp_concise.get_config()
    absolute.model = f"{ROOT / 'experiments' / 'mlp_concise.py'}:MLP"
    assert models.model_class(relative) is models.model_class(absolute) is mlp_concise.MLP
    monkeypatch.chdir(ROOT / "experiments")  # A notebook's folder: the path is found above.
    assert models.model_class(relative) is mlp_concise.MLP


def test_a_model_in_an_importable_module_is_named_by_its_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import flax.linen as nn\n\n\nclass Linear(nn.Module):\n"
        "    num_outputs: int = 10\n\n"
        "    @nn.compact\n"
        "    def __call__(self, x, train=False):\n"
        "        return nn.Dense(self.num_outputs)(x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_lib.base_config()
    config.model, config.num_outputs = "my_models:Linear", 10
    model = models.resolve_model(config)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    assert _count(params) == 784 * 10 + 10


def test_a_missing_model_file_names_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = mlp_concise.get_config()
    config.model = "experiments/nope.py:MLP"
    with pytest.raises(UserError, match=r"experiments/nope.py: no such file in .*"):
        models.model_class(config)


@pytest.mark.parametrize("named", [None, "", "experiments/mlp_scratch.py"])
def test_a_config_model_that_names_no_class_is_one_line(named):
    # None was an AttributeError of str.partition, from a notebook.
    config = experiment("mlp_scratch").get_config()
    config.model = named
    with pytest.raises(UserError, match=f"config.model={named!r} names no model: give it as"):
        models.model_class(config)
