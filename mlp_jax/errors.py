"""The one exception type that reaches the user as a single line, not a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad input, missing data, a bad config value.

    The message is one line that names the file or key at fault and says how to fix it.
    `mlp_jax.main` prints it to stderr and exits non-zero.
    """
