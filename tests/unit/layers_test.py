"""The layers, read from the source with `ast` (nothing is imported): each top-level folder
imports only from itself and the folders before it in mlp_jax -> benchmarks -> experiments ->
tests.

So the library imports none of the others; the benchmarks (the peers, the reports' helpers,
the timed speedrun recipes) use only the library; the studies and chapter configs under
experiments/ may use both; the tests may use everything. No two folders import each other.
A config file that one folder loads by its path (`load_experiment`) or a module another
process runs (`python -m`) is not an import: it crosses no layer.

Within the library, the pure modules (the compiled step and what it is built from) import no
module that reads or writes: everything comes in as arguments, and writing happens between
programs, in the modules that write a run's outputs.

Every command takes absl flags (`mlp_jax.errors.run_command`): ml_collections' --config
overrides are absl flags, so the project has one command-line library, and argparse is not
imported outside the tests.
"""

import ast
from pathlib import Path

import pytest
from helpers import ROOT

LAYERS = ("mlp_jax", "benchmarks", "experiments", "tests")
PURE_MODULES = ("steps", "augment", "optim", "metrics")
# What reads, writes or shows: the library's own I/O modules and the standard ones.
IO_MODULES = frozenset(
    {f"mlp_jax.{name}" for name in ("files", "writers", "checkpointing", "progress", "plots")}
    | {"os", "io", "json", "pathlib", "shutil", "tempfile", "subprocess", "etils", "orbax"}
)
# tests/ is on the path itself (pyproject's pythonpath): `import helpers` is tests/helpers.py.
TEST_MODULES = frozenset(p.stem for p in (ROOT / "tests").glob("*.py"))


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None for one outside the project."""
    top = module.split(".")[0]
    if top in TEST_MODULES:
        return "tests"
    return top if top in LAYERS else None


def imported_modules(path: Path) -> set[str]:
    """The absolute module names `path` imports anywhere (a function-level import too): for
    `from A import B`, both A and A.B, since B may be a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_violations(root: Path) -> list[str]:
    """Each import under `root` that reaches a later layer than its own file's."""
    violations = []
    for layer in LAYERS:
        allowed = LAYERS[: LAYERS.index(layer) + 1]
        for path in sorted((root / layer).rglob("*.py")):
            for module in sorted(imported_modules(path)):
                target = layer_of(module)
                if target is not None and target not in allowed:
                    violations.append(f"{path.relative_to(root)} imports {module} ({target})")
    return violations


def test_each_folder_imports_only_itself_and_the_layers_before_it():
    assert layer_violations(ROOT) == []


def test_no_two_folders_import_each_other():
    edges = set()
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            edges |= {(layer, layer_of(m)) for m in imported_modules(path)}
    assert [(a, b) for a, b in edges if a != b and (b, a) in edges] == []


def io_imports(path: Path) -> list[str]:
    """The I/O modules (IO_MODULES, or a submodule of one) that `path` imports."""
    return sorted(
        module
        for module in imported_modules(path)
        if any(module == io or module.startswith(f"{io}.") for io in IO_MODULES)
    )


@pytest.mark.parametrize("name", PURE_MODULES)
def test_a_pure_module_imports_no_io(name):
    assert io_imports(ROOT / "mlp_jax" / f"{name}.py") == []


def test_an_io_import_in_a_pure_module_is_caught(tmp_path):
    path = tmp_path / "steps.py"
    path.write_text("import jax\nfrom mlp_jax import augment, files\nfrom etils import epath\n")
    assert io_imports(path) == ["etils", "etils.epath", "mlp_jax.files"]


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("mlp_jax", "from benchmarks import report\n"),
        ("benchmarks", "def f():\n    from experiments.studies.speedrun import run\n"),
        ("experiments", "import helpers\n"),
    ],
)
def test_an_import_of_a_later_layer_is_caught(tmp_path, layer, source):
    (tmp_path / layer).mkdir()
    (tmp_path / layer / "module.py").write_text(source)
    for other in LAYERS:
        (tmp_path / other).mkdir(exist_ok=True)
    violations = layer_violations(tmp_path)
    assert violations and all(v.startswith(f"{layer}/module.py imports ") for v in violations)


def argparse_importers(root: Path) -> list[str]:
    """The files under mlp_jax/, benchmarks/ and experiments/ that import argparse."""
    return [
        str(path.relative_to(root))
        for layer in LAYERS[:-1]
        for path in sorted((root / layer).rglob("*.py"))
        if "argparse" in imported_modules(path)
    ]


def test_every_command_uses_absl_flags_not_argparse():
    assert argparse_importers(ROOT) == []


def test_an_argparse_import_is_caught(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "benchmarks" / "tool.py").write_text("def main():\n    import argparse\n")
    assert argparse_importers(tmp_path) == ["benchmarks/tool.py"]
