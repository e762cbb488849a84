"""The studies: the chapter's exercises, the joint search, the best plain MLP, time to
accuracy and parity, each a command (`python -m experiments.studies.NAME.run`)."""

import sys

from mlp_jax import errors

# Before a study's module imports JAX, or matplotlib: a JAX_* setting JAX refuses, or a
# MPLBACKEND matplotlib does not know, is one line. (The second only as a command starts,
# Python running `-m`: a notebook's import gets matplotlib's own error, its interpreter kept.)
errors.import_jax()
if sys.argv[:1] == ["-m"]:
    try:
        errors.check_plot_backend()
    except errors.UserError as e:  # Before the command's own handling: its one line here.
        errors.fail(str(e))
