"""A dependency missing from the Python that runs a command: one line naming that Python and
the fix, wherever it surfaces (a command's imports, a config file's, a model file's)."""

import importlib.util
import subprocess
import sys

import ml_collections
import pytest
from helpers import ROOT

from mlp_jax import dependencies, errors, models
from mlp_jax.errors import UserError


def _missing(module: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"No module named {module!r}", name=module)


@pytest.fixture
def uninstalled(monkeypatch):
    """Makes the packages named look uninstalled to the lookup, as where they are missing."""

    def make(*packages):
        find_spec = importlib.util.find_spec
        lookup = lambda name, *args: None if name in packages else find_spec(name, *args)  # noqa: E731
        monkeypatch.setattr(importlib.util, "find_spec", lookup)

    return make


@pytest.mark.parametrize(
    "module, distribution",
    [
        ("flax", "flax"),
        ("orbax.checkpoint", "orbax-checkpoint"),
        ("absl", "absl-py"),
        ("ml_collections", "ml-collections"),
        ("PIL", "pillow"),
        ("scipy", "scipy"),  # A dependency's own (jax's), read from its metadata.
        ("numppy", None),  # A bug's import: no dependency installs it; its traceback stays.
        # A part of an installed package (an API that moved): reinstalling mends nothing.
        ("jax.experimental.no_such_module", None),
        ("tensorflow", None),  # An extra's: said where its feature is used.
    ],
)
def test_a_missing_module_is_told_by_the_distribution_that_installs_it(
    module, distribution, uninstalled
):
    uninstalled(*{module.split(".")[0]} - {"jax"})
    assert dependencies.distribution_missing(_missing(module)) == distribution


def test_a_venv_that_lost_a_package_is_told_to_install_again(monkeypatch, uninstalled):
    uninstalled("flax")
    monkeypatch.setattr(sys, "prefix", str(ROOT / ".venv"))
    line = dependencies.missing_line(_missing("flax"))
    assert line.startswith(f"{ROOT / '.venv'} lacks mlp_jax's dependency flax (No module named")
    assert line.endswith(
        f"install it again: rm {ROOT / '.venv'}/.installed && make install (in {ROOT})"
    )
    assert dependencies.missing_line(ValueError("flax")) is None


def test_a_python_without_the_dependencies_is_one_line_naming_the_one_to_use():
    # The README's `python -m mlp_jax.main ...` in a shell without .venv activated: an
    # 11-line traceback ending "No module named 'absl'" (trial 13). -S: a Python whose
    # site-packages hold none of them.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "mlp_jax.main", "--mode=eval", "--workdir=nowhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: this Python ({sys.executable}) lacks mlp_jax's dependency absl-py (No module "
        "named 'absl'); run the command with .venv/bin/python"
    ]


def test_a_config_file_whose_import_is_missing_blames_the_python_not_the_file(
    tmp_path, uninstalled
):
    uninstalled("flax")
    # "--config=...: loading it raised ModuleNotFoundError: No module named 'flax'; fix that
    # file", of a .venv that had lost flax (trial 13).
    config = tmp_path / "c.py"
    config.write_text("raise ModuleNotFoundError(\"No module named 'flax'\", name='flax')\n")
    line = errors._config_error(_missing("flax"), [f"--config={config}"])
    assert "lacks mlp_jax's dependency flax (No module named 'flax'); " in line
    assert "fix that file" not in line
    assert errors._config_error(_missing("numppy"), [f"--config={config}"]).endswith(
        "loading it raised ModuleNotFoundError: No module named 'numppy'; fix that file"
    )


def test_a_model_file_whose_import_is_missing_blames_the_python_not_the_file(tmp_path, uninstalled):
    uninstalled("flax")
    model = tmp_path / "model.py"
    model.write_text("raise ModuleNotFoundError(\"No module named 'flax'\", name='flax')\n")
    config = ml_collections.ConfigDict({"model": f"{model}:Model"})
    with pytest.raises(UserError, match="cannot be loaded: .* lacks mlp_jax's dependency flax"):
        models.model_class(config)
