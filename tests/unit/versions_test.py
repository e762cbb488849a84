"""The declared versions say what is tested: every lower bound in pyproject.toml is met by
what is installed here, where the suite runs (so a bound cannot drift above what passed)."""

import importlib.metadata

import pytest
import tomllib
from helpers import ROOT
from packaging.requirements import Requirement

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [
    Requirement(line) for line in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
]


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_the_installed_version_meets_the_declared_bound(requirement):
    installed = importlib.metadata.version(requirement.name)
    assert any(s.operator == ">=" for s in requirement.specifier), f"{requirement}: no lower bound"
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed, pyproject.toml asks {requirement}"
    )
