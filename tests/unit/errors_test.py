"""mlp_jax.errors' command path, in a process of its own: what it does to the interpreter
(its garbage collector) is the process's, not a test session's."""

import subprocess
import sys

from helpers import ROOT

# A command that reports the collector's state while its flags are defined and in its main.
COMMAND = """
import gc

from mlp_jax import errors


def define_flags():
    print("flags", gc.isenabled())


def main():
    print("main", gc.isenabled(), gc.get_freeze_count() > 0)


errors.run_command(main, define_flags)
"""


def test_a_command_imports_without_the_collector_and_runs_with_it_on_its_imports_frozen():
    # Off while the modules are imported and the flags parsed (a tenth of a second of JAX's
    # start); on for the work, or a long run's cycles would never be freed.
    result = subprocess.run(
        [sys.executable, "-c", COMMAND], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flags False", "main True True"]
