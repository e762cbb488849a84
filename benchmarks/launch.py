"""mlp_jax's commands in child processes, for the tests, studies and benchmarks that need a
whole process: to time it from outside, to send it signals, or to run several at once.

Each child runs `python -m MODULE ARGS` with this interpreter; its output is captured as
text.
"""

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import NamedTuple

from mlp_jax.errors import UserError


class Finished(NamedTuple):
    """A child process that ended: its exit status, its output and its wall seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def command(*args: str, module: str = "mlp_jax.main") -> list[str]:
    """The argument list of `python -m MODULE ARGS` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def start(
    *args: str,
    module: str = "mlp_jax.main",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Starts `python -m MODULE ARGS` (default: the training command) and returns at once.

    Args:
      args: its arguments.
      module: the module to run.
      env: its whole environment (default: this process's).
      cwd: its working folder (default: this process's).
    """
    return subprocess.Popen(
        command(*args, module=module),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    *args: str,
    module: str = "mlp_jax.main",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float | None = None,
    check: bool = False,
) -> Finished:
    """Runs `python -m MODULE ARGS` to its end (see `start`), timed from outside.

    Raises:
      subprocess.TimeoutExpired: it ran past `timeout` seconds (it is killed).
      UserError: with `check`, it ended in a user's one line (its line).
      RuntimeError: with `check`, it failed otherwise; the message ends with its stderr.
    """
    t0 = time.perf_counter()
    process = start(*args, module=module, env=env, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:  # A timeout, a Ctrl-C: no child outlives its caller.
        process.kill()
        process.communicate()
        raise
    finished = Finished(process.returncode, stdout, stderr, time.perf_counter() - t0)
    # A user's fault, not a bug: its one line, where a RuntimeError's traceback wrapped it.
    said = stderr.strip().splitlines()
    users = said and said[-1].startswith("error: ") and "Traceback (most recent" not in stderr
    if check and finished.returncode and users:
        raise UserError(f"python -m {module} failed: {said[-1].removeprefix('error: ')}")
    if check and finished.returncode:
        raise RuntimeError(
            f"python -m {module} {' '.join(args)} failed ({finished.returncode}): "
            f"{finished.stderr[-2000:]}"
        )
    return finished
