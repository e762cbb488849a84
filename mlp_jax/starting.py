"""A command's first moments, before its imports: whether this process is one of the
project's commands, what Ctrl-C does until the command takes the signals, and what a
dependency missing from its Python says. Standard library only, and imported first (by
mlp_jax/__init__.py): it must work before, and without, any dependency.
"""

import os
import signal
import sys


def a_command_of_this_project_starts() -> bool:
    """Whether this import is the start of one of the project's commands (python -m
    mlp_jax.main, a study, a benchmark): runpy names the module's file in argv[0] only once
    its packages are imported, so argv[0] is "-m" now; the interpreter's own command line
    says which module. A user's `python -m theirs.run` whose package imports mlp_jax is not
    one: its Ctrl-C must stay theirs (it ended their process at once, their cleanups
    skipped; trial 11)."""
    if sys.argv[:1] != ["-m"]:
        return False
    words = list(getattr(sys, "orig_argv", ()))
    flag = next((i for i, word in enumerate(words) if word.startswith("-m")), None)
    if flag is None:
        return False
    module = words[flag][2:] or (words[flag + 1] if flag + 1 < len(words) else "")
    return module.split(".")[0] in ("mlp_jax", "experiments", "benchmarks")


def signal_name(number: int) -> str:
    """'SIGHUP' for its number; 'SIGRTMIN+3' for a real-time signal, which Python names
    only at the ends of their range."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"


def stopped_while_starting(signal_number: int) -> str:
    """The line of a command a signal stopped before its main (`errors.run_command`, and
    `stop_at_once_while_starting` where it was set)."""
    return (
        f"stopped by {signal_name(signal_number)} as it started, before it did anything; "
        "rerun the command"
    )


def stop_at_once_while_starting() -> None:
    """Makes Ctrl-C (SIGINT) end the process at once, in one line and status 130, until the
    command takes the signals (`signals.exit_on_signals`): nothing is in flight before its
    main. As Python's KeyboardInterrupt it was a traceback from wherever an import was, a
    crash where it cut a C extension's set-up short (numpy's, jaxlib's), or lost where it
    fell in JAX's garbage-collection callback, the command then running to its end. Set
    before the package's first import of a dependency; a process started ignoring SIGINT
    keeps ignoring it."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stopped_at_once)


def stopped_at_once(signal_number, _frame):
    """The handler `stop_at_once_while_starting` sets: the line, then the end."""
    try:
        sys.stdout.flush()
        os.write(2, f"error: {stopped_while_starting(signal_number)}\n".encode())
    except (OSError, ValueError):  # A closed stream: the status says it.
        pass
    os._exit(128 + signal_number)


def explain_missing_dependencies() -> None:
    """Makes a dependency missing from this Python, where it reaches the top of a command,
    one line naming that Python and the fix (`dependencies.missing_line`) and status 1,
    rather than a traceback; any other exception keeps Python's own report."""
    previous = sys.excepthook

    def hook(kind, error, trace):
        from mlp_jax import dependencies  # noqa: PLC0415  (only where one fails)

        line = dependencies.missing_line(error)
        if line is None:
            previous(kind, error, trace)
        else:
            print(f"error: {line}", file=sys.stderr)

    sys.excepthook = hook
