"""mlp_jax: chapter 5.2 of Dive into Deep Learning (multilayer perceptrons) in JAX and Flax."""

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # Imported as a command starts (python -m mlp_jax.main, a study,
    # a benchmark: runpy names the module's file in argv[0] only once its packages are
    # imported), before the imports of its first lines: see the function.
    from mlp_jax import signals as _signals

    _signals.stop_at_once_while_starting()
