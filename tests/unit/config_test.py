"""Config validation: every bad value fails before anything is compiled."""

import dataclasses
import re
from unittest import mock

import ml_collections
import numpy as np
import pytest
from helpers import ROOT, experiment

from mlp_jax import config as config_lib
from mlp_jax import models, optim, sweep
from mlp_jax.errors import UserError

mlp_scratch, mlp_concise = experiment("mlp_scratch"), experiment("mlp_concise")
# The experiments whose model fields docs/config.md lists (the Makefile's `docs` target).
REFERENCE_EXPERIMENTS = ["experiments/mlp_scratch.py", "experiments/mlp_concise.py"]


def _validate(config):
    config_lib.validate(config, models.model_fields(models.model_class(config)))


@pytest.mark.parametrize("module", [mlp_scratch, mlp_concise])
def test_experiment_configs_are_valid_and_match_d2l(module):
    config = module.get_config()
    _validate(config)
    assert (config.num_hiddens, config.lr, config.batch_size, config.num_epochs, config.seed) == (
        256,
        0.1,
        256,
        10,
        0,
    )
    assert config.optimizer == "sgd" and config.schedule == "constant"


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "adamw"])
@pytest.mark.parametrize("momentum", [1.0, -0.5])
def test_a_momentum_outside_0_1_is_refused_where_the_optimiser_reads_it(optimizer, momentum):
    # Unchecked, it diverged after an epoch, the line saying to lower the lr (trial 8).
    config = mlp_concise.get_config()
    config.optimizer, config.momentum = optimizer, momentum
    with pytest.raises(UserError, match=rf"config.momentum={momentum} is invalid: must be in"):
        _validate(config)
    config.optimizer = "sgd"  # Never read there: a run saved so stays readable.
    _validate(config)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lr", 0.0, "config.lr=0.0 is invalid: must be > 0"),
        ("lr", -1.0, "config.lr=-1.0 is invalid"),
        ("batch_size", 0, "config.batch_size=0 is invalid: must be >= 1"),
        ("num_hiddens", 0, "config.num_hiddens=0 is invalid: must be >= 1"),
        ("num_epochs", -1, "config.num_epochs=-1 is invalid: must be in 0..1000000"),
        ("optimizer", "rmsprop", "config.optimizer='rmsprop' is invalid"),
        ("parallel", "xmap", "config.parallel='xmap' is invalid"),
        ("compute_dtype", "float16", "config.compute_dtype='float16' is invalid"),
        ("augment_rotate", 200.0, "config.augment_rotate=200.0 is invalid: must be in [0, 180]"),
        ("augment_scale", 1.0, "config.augment_scale=1.0 is invalid: must be in [0, 1)"),
        ("augment_elastic", -1.0, "config.augment_elastic=-1.0 is invalid: must be >= 0"),
        ("augment_erase", 1.5, "config.augment_erase=1.5 is invalid: must be in [0, 1]"),
        ("mixup_alpha", -0.2, "config.mixup_alpha=-0.2 is invalid: must be >= 0"),
        ("cutmix_alpha", -1.0, "config.cutmix_alpha=-1.0 is invalid: must be >= 0"),
        ("ema_decay", 1.0, "config.ema_decay=1.0 is invalid: must be in [0, 1)"),
        ("norm", "batch", "config.norm='batch' is invalid"),
    ],
)
def test_bad_values_are_named(key, value, message):
    config = mlp_concise.get_config()
    config[key] = value
    with pytest.raises(UserError, match=re.escape(message)):
        _validate(config)


@pytest.mark.parametrize(
    "key, value, message",
    [
        # Whole numbers past JAX's 32-bit ones failed inside XLA, or after its warnings.
        ("batch_size", 10**20, "config.batch_size=100000000000000000000 is invalid: must be at"),
        ("eval_batch_size", 2**31, f"must be at most {2**31 - 1}"),
        ("num_epochs", 10**9, "config.num_epochs=1000000000 is invalid: must be in 0..1000000"),
        ("warmup_epochs", 2 * 10**9, "config.warmup_epochs=2000000000 is invalid: must be in"),
        ("seed", 2**32 - 1, None),  # A seed's own range.
        # What a file gives (a workdir's config.json) has no ConfigDict's type safety.
        ("num_hiddens", "32", "config.num_hiddens='32' is invalid: must be a whole number"),
        ("eval_batch_size", None, "config.eval_batch_size=None is invalid: must be a whole"),
        ("lr", True, "config.lr=True is invalid: must be a number"),
        ("lr", 1, None),  # A whole number is a number.
        ("optimizer", 3, "config.optimizer=3 is invalid: must be a string"),
        ("augment_flip", 1, "config.augment_flip=1 is invalid: must be True or False"),
        # A hand-built config's numpy values ("must be a number" of np.float32(0.05): trial 11).
        ("lr", np.float32(0.05), "must be a number of Python's: give float(...) of it"),
        ("num_hiddens", np.int64(8), "must be a whole number of Python's: give int(...) of it"),
        ("lr", np.float64(0.05), None),  # A float itself.
    ],
)
def test_values_of_the_wrong_kind_or_beyond_the_integers_are_named(key, value, message):
    config = ml_collections.ConfigDict({**mlp_concise.get_config().to_dict(), key: value})
    if message is None:
        _validate(config)
        return
    with pytest.raises(UserError, match=re.escape(message)):
        _validate(config)


def test_a_run_of_more_steps_than_it_can_count_is_refused():
    # Its schedule's step counts are 32-bit: an overflow was a traceback inside jit.
    config = mlp_concise.get_config()
    config.num_epochs = 10**6
    with pytest.raises(UserError, match="num_epochs=1000000 is too long: 1000000 epochs of 3000"):
        optim.make_optimizer(config, steps_per_epoch=3000)
    optim.make_optimizer(config, steps_per_epoch=2000)  # 2e9 steps: counted.


def test_unknown_key_in_an_experiment_file_is_named():
    config = mlp_scratch.get_config()
    config.learning_rate = 0.1  # A typo of lr.
    with pytest.raises(UserError, match="unknown config key 'learning_rate'"):
        _validate(config)


def test_model_field_of_another_model_is_unknown():
    config = mlp_scratch.get_config()
    config.dropout = 0.5  # MLPScratch has no dropout.
    with pytest.raises(UserError, match="unknown config key 'dropout'"):
        _validate(config)


def test_epoch_options_are_config_fields_read_in_one_place():
    base = config_lib.base_config()
    fields = dataclasses.fields(config_lib.EpochOptions)
    assert all(base[f.name] == f.default for f in fields)
    config = mlp_concise.get_config()
    config.augment_shift, config.mixup_alpha, config.compute_dtype = 2, 0.4, "bfloat16"
    options = config_lib.EpochOptions.from_config(config)
    assert (options.augment_shift, options.mixup_alpha, options.compute_dtype) == (
        2,
        0.4,
        "bfloat16",
    )
    assert options == config_lib.EpochOptions.from_config(config)  # Equal and hashable: jit
    assert len({options, config_lib.EpochOptions.from_config(config)}) == 1  # caches hit.


def test_the_config_reference_page_is_generated_from_the_declarations():
    # docs/config.md is generated (make docs); a field added without its page fails here.
    page = (ROOT / "docs" / "config.md").read_text()
    assert page == config_lib.reference_markdown(REFERENCE_EXPERIMENTS)
    for field in (*config_lib.BASE_FIELDS, *config_lib.MODEL_FIELDS):
        assert f"| `{field.name}` | `{field.default!r}` |" in page
    assert "| run | free | shared | - |" in page.split("`trace_epoch`")[1]  # Never populations.


def test_the_roles_give_the_sets_the_library_acts_on():
    # Each set was once a hand-kept list in its own module; a role declared wrongly (a field
    # made free on resume, say) changes one of them and fails here.
    names = config_lib.names
    assert names(config_lib.Field.run_only) == {
        "parallel",
        "num_devices",
        "epochs_per_program",
        "checkpoint_every_epochs",
        "keep_checkpoints",
        "trace_epoch",
    }
    assert names(config_lib.Field.population_only) == {"share_data_order"}
    constant, cosine = config_lib.base_config(), config_lib.base_config()
    cosine.schedule = "cosine"
    free = {"data_dir", "eval_batch_size", "scan_unroll", "share_data_order"}
    free |= names(config_lib.Field.run_only)
    assert names(lambda f: f.may_change_on_resume(cosine)) == free
    assert names(lambda f: f.may_change_on_resume(constant)) == free | {"num_epochs"}
    per_member = {"seed", "lr", "weight_init", "init_scale"}
    assert names(lambda f: f.in_population == config_lib.PER_MEMBER) == per_member
    assert names(lambda f: f.sizes == config_lib.PARAMETERS) == {"num_hiddens", "num_layers"}
    assert names(lambda f: f.sizes == config_lib.ACTIVATIONS) == {"batch_size", "eval_batch_size"}
    assert names(lambda f: f.local) == {"data_dir"}
    epoch_options = {f.name for f in dataclasses.fields(config_lib.EpochOptions)}
    assert epoch_options == names(lambda f: f.epoch_option)


def test_an_experiment_declares_its_own_field_once_and_the_library_honours_it(monkeypatch):
    monkeypatch.setattr(config_lib, "_DECLARED", dict(config_lib._DECLARED))
    field = config_lib.Field(  # Read only at initialisation, so it may differ per member.
        "bias_init_scale",
        1,
        "Standard deviation of the biases' initial values.",
        config_lib.at_least(1),
        in_population=config_lib.PER_MEMBER,
        on_resume=config_lib.FREE,
    )
    config_lib.declare(field)
    config_lib.declare(field)  # Loading the file again declares the same field: no error.
    with pytest.raises(ValueError, match="'bias_init_scale' is declared twice"):
        config_lib.declare(dataclasses.replace(field, default=8))
    config = mlp_concise.get_config()
    config.bias_init_scale = 0
    with pytest.raises(
        UserError, match=re.escape("config.bias_init_scale=0 is invalid: must be >= 1")
    ):
        config_lib.validate(config, models.model_fields(mlp_concise.MLP) | {"bias_init_scale"})
    other = config.copy_and_resolve_references()
    other.bias_init_scale = 2
    assert sweep.group_key(config) == sweep.group_key(other)  # Per member: one population.
    assert config_lib.declared("bias_init_scale").may_change_on_resume(config)
    # Undeclared, a field takes the safe roles: shared in a population, fixed on resume.
    undeclared = config_lib.declared("num_experts")
    assert (undeclared.in_population, undeclared.on_resume) == (config_lib.SHARED, "fixed")
    config.num_experts, other.num_experts = 1, 2
    assert sweep.group_key(config) != sweep.group_key(other)


def test_a_users_file_that_ends_the_process_is_refused_naming_it(tmp_path):
    # Its sys.exit(0) ended a command with status 0, having run nothing.
    at_import, in_get_config = tmp_path / "at_import.py", tmp_path / "in_get_config.py"
    at_import.write_text("import sys\n\nsys.exit(0)\n")
    in_get_config.write_text("import sys\n\n\ndef get_config():\n    sys.exit(3)\n")
    with pytest.raises(UserError, match=r"at_import.py: ended the process \(sys.exit\(0\)\)"):
        config_lib.load_module(at_import)
    with pytest.raises(UserError, match=r"in_get_config.py: ended the process \(sys.exit\(3\)\)"):
        config_lib.load_experiment(in_get_config)
    # An exit the file did not make (a stop signal's, as it ran) goes on as it was.
    stopped = tmp_path / "stopped.py"
    stopped.write_text("def get_config():\n    return 1\n")
    module = config_lib.load_module(stopped)
    exit_of_a_stop = mock.patch.object(module, "get_config", side_effect=SystemExit(143))
    with exit_of_a_stop, pytest.raises(SystemExit):
        config_lib.load_experiment(stopped)


def test_an_experiment_file_without_get_config_is_named(tmp_path):
    path = tmp_path / "not_an_experiment.py"
    path.write_text("x = 1\n")
    with pytest.raises(UserError, match=r"not_an_experiment.py: defines no get_config"):
        config_lib.load_experiment(path)
