"""What a missing dependency means, in one line: the Python that runs a command lacks one of
mlp_jax's dependencies (a shell without `.venv` activated, a `.venv` a package was removed
from). Standard library only: it must work where every dependency is missing, and it is
imported as a command starts, before anything else of the package (what only the error
path needs is imported there: importlib.metadata takes 0.02 s).
"""

import contextlib
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Modules named otherwise than the distribution that installs them.
_DISTRIBUTION_OF = {"PIL": "pillow", "yaml": "pyyaml"}


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized: "ml_collections>=1.1" -> "ml-collections"."""
    return re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> list[str]:
    """mlp_jax's own dependencies (not its extras'), as installed (its metadata) or as its
    pyproject.toml declares them (run from a clone by a Python it is not installed in)."""
    import importlib.metadata  # noqa: PLC0415

    import tomllib  # noqa: PLC0415

    try:  # Less the extras': a missing one is said where its feature is used.
        return [r for r in importlib.metadata.requires("mlp_jax") or [] if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except (OSError, ValueError, KeyError):
        return []


def _needed() -> set[str]:
    """The distributions mlp_jax needs, its dependencies' own included where installed."""
    import importlib.metadata  # noqa: PLC0415

    needed, waiting = set(), [_name(r) for r in _declared()]
    while waiting:
        name = waiting.pop()
        if name in needed:
            continue
        needed.add(name)
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):  # Not installed.
            requires = importlib.metadata.requires(name) or []
            waiting.extend(_name(r) for r in requires if "extra ==" not in r)
    return needed


def distribution_missing(error: BaseException) -> str | None:
    """The distribution of mlp_jax's dependencies whose absence `error` reports (a
    ModuleNotFoundError of its module), or None: another error, or a module no dependency
    installs (a bug's import keeps its traceback)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    import importlib.util  # noqa: PLC0415

    parts = error.name.split(".")
    # A part of an installed package gone (jax.experimental.pjit, an API that moved) is no
    # missing dependency: reinstalling mends nothing, and its traceback stays.
    with contextlib.suppress(ImportError, ValueError):
        if importlib.util.find_spec(parts[0]) is not None:
            return None
    needed = _needed()
    for length in range(len(parts), 0, -1):  # google.cloud.storage: google-cloud-storage.
        name = "-".join(parts[:length]).lower().replace("_", "-")
        if name in needed:
            return name
    top = _DISTRIBUTION_OF.get(parts[0], parts[0].lower().replace("_", "-"))
    return next((d for d in sorted(needed) if d == top or d.startswith(f"{top}-")), None)


def missing_line(error: BaseException) -> str | None:
    """One line for a dependency `error` reports missing, naming the Python that lacks it
    and the fix; None where `error` is no such thing."""
    distribution = distribution_missing(error)
    if distribution is None:
        return None
    lacks = f"lacks mlp_jax's dependency {distribution} ({error})"
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() == venv.resolve():
        return f"{venv} {lacks}; install it again: rm {venv}/.installed && make install (in {ROOT})"
    python = venv / "bin" / "python"
    if python.exists():
        shown = ".venv/bin/python" if Path.cwd().resolve() == ROOT else shlex.quote(str(python))
        return f"this Python ({sys.executable}) {lacks}; run the command with {shown}"
    return (
        f"this Python ({sys.executable}) {lacks}; run `make install` in {ROOT}, then use "
        ".venv/bin/python"
    )
