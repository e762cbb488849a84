"""mlp_jax: chapter 5.2 of Dive into Deep Learning (multilayer perceptrons) in JAX and Flax."""

import sys as _sys


def _a_command_of_this_project_starts() -> bool:
    """Whether this import is the start of one of the project's commands (python -m
    mlp_jax.main, a study, a benchmark): runpy names the module's file in argv[0] only once
    its packages are imported, so argv[0] is "-m" now; the interpreter's own command line
    says which module. A user's `python -m theirs.run` whose package imports mlp_jax is not
    one: its Ctrl-C must stay theirs (it ended their process at once, their cleanups
    skipped; trial 11)."""
    if _sys.argv[:1] != ["-m"]:
        return False
    words = list(getattr(_sys, "orig_argv", ()))
    flag = next((i for i, word in enumerate(words) if word.startswith("-m")), None)
    if flag is None:
        return False
    module = words[flag][2:] or (words[flag + 1] if flag + 1 < len(words) else "")
    return module.split(".")[0] in ("mlp_jax", "experiments", "benchmarks")


if _a_command_of_this_project_starts():  # Before the imports of its first lines: see
    from mlp_jax import dependencies as _dependencies  # the function.

    _dependencies.explain_at_exit()  # Before the first import of a dependency.
    from mlp_jax import signals as _signals

    _signals.stop_at_once_while_starting()
