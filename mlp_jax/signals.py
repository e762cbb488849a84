"""Signals that end a process, and how mlp_jax ends it instead: after the work in flight.

A closed terminal or a dropped ssh session (SIGHUP, how runs on a TPU VM die), a preemption
notice (SIGTERM), Ctrl-C (SIGINT), Ctrl-\\ (SIGQUIT), a batch system's limits (SIGXCPU,
SIGALRM, SIGUSR1/2): every signal whose default would kill the process mid-write is taken
over, in two ways.

- `exit_on_signals`, for a whole command: the signal raises `Stopped` (a KeyboardInterrupt)
  where the command is, which ends it in one line (`mlp_jax.errors.command`).
- `StopRequests`, around work that can stop cleanly between steps (a run's epochs, a
  population's): the signal only asks, the step in flight finishes and is saved, and the work
  ends with `Interrupted` (exit status 128 + the signal's number).
"""

import os
import queue
import signal
import sys
import threading
import time

from mlp_jax.errors import environment_number, error_line, signal_name
from mlp_jax.starting import stopped_at_once

# The signals whose default action ends the process and that nothing in this process uses:
# the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS, SIGTRAP) are left to the
# runtime, SIGPROF to profilers, SIGKILL and SIGSTOP cannot be caught; Python itself ignores
# SIGPIPE and SIGXFSZ (a write then fails with an error, handled where it happens). The
# real-time signals end a process by default too (SIGRTMIN+3 killed a run, its epoch lost).
TERMINATING = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGTERM",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGXCPU",
        "SIGPOLL",
        "SIGPWR",
        "SIGSTKFLT",
    )
    if hasattr(signal, name)
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1) if hasattr(signal, "SIGRTMIN") else ())


def name(signal_number: int) -> str:
    """'SIGHUP' for its number (errors.signal_name)."""
    return signal_name(signal_number)


class Stopped(KeyboardInterrupt):
    """A terminating signal arrived where nothing was in flight that could be finished first.

    Attributes:
      signal_number: the signal.
    """

    def __init__(self, signal_number: int):
        super().__init__(f"stopped by {name(signal_number)}")
        self.signal_number = signal_number


class Interrupted(KeyboardInterrupt):
    """Work stopped on a signal after saving what was in flight. A KeyboardInterrupt, as
    Python makes Ctrl-C, so that a caller's `except Exception` (a loop over configs that
    skips the ones that fail) does not take it for a failure and go on (trial 11).

    Attributes:
      exit_code: 128 + the signal's number, the command's exit status.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# The signal that stopped the command, 0 before any did; whether Python dropped its Stopped.
_stopping = 0
_dropped = False


def _raise_stopped(signal_number, _frame):
    """Raises Stopped once: a second signal (`timeout` signals the process, then its
    group) while the first unwinds would break its cleanups with a second traceback. Where
    Python dropped what it raised (it ran inside JAX's garbage-collection callback), the
    signal is sent again (`_send_dropped_stops_again`) and raised again; meanwhile it is
    kept in `_stopping`, for a run's `StopRequests` to honour."""
    global _stopping, _dropped
    if not _stopping or _dropped:
        _stopping, _dropped = signal_number, False
        raise Stopped(signal_number)


def _send_dropped_stops_again() -> None:
    """Makes a `Stopped` that Python dropped (raised where nothing can catch it: inside a
    garbage-collection callback, JAX's among them) be raised again where the command is, by
    sending its signal again, in place of Python's report of it. Dropped, it was a traceback
    on stderr and a command that went on to status 0, deaf to every later signal (one eval,
    predict or export in ten stopped in its last tenth of a second; trial 10)."""
    previous = sys.unraisablehook
    if getattr(previous, "sends_dropped_stops_again", False):
        return
    # Sent by a thread of its own, a moment later: sent from the hook, the signal is handled
    # in the hook, where what it raises is dropped for good. (A C queue: putting into it runs
    # no Python code, where the signal could be handled.)
    dropped = queue.SimpleQueue()

    def send_again() -> None:
        while True:
            signal_number = dropped.get()
            time.sleep(0.05)  # Out of the hook by then; still in the callback, sent again.
            os.kill(os.getpid(), signal_number)

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Stopped):
            previous(unraisable)
            return
        global _dropped
        _dropped = True  # It never unwound: raised again, once.
        dropped.put(unraisable.exc_value.signal_number)

    threading.Thread(target=send_again, daemon=True, name="mlp_jax stops sent again").start()
    hook.sends_dropped_stops_again = True
    sys.unraisablehook = hook


def _is_default(handler) -> bool:
    """Whether `handler` is the one a signal starts with (Python's own, for SIGINT, or the
    command's as it starts: `starting.stop_at_once_while_starting`)."""
    return handler in (signal.SIG_DFL, signal.default_int_handler, stopped_at_once)


def exit_on_signals() -> None:
    """Makes every terminating signal whose handler is still the default raise `Stopped` in
    the main thread: the command's one line and exit status, and the cleanups of the
    `with` blocks it interrupts, instead of an abrupt death (or a KeyboardInterrupt's
    traceback). A signal this process was started ignoring (`nohup`) stays ignored."""
    for sig in TERMINATING:
        if _is_default(signal.getsignal(sig)):
            signal.signal(sig, _raise_stopped)
    _send_dropped_stops_again()


class StopRequests:
    """Turns every terminating signal into a request, read between steps (compiled programs),
    so that the step in flight finishes and its state is saved before the work ends.

    On several hosts a signal may reach some processes only: `agreed_signal` is a collective
    decision, so every process stops after the same step and saves it together. Outside the
    main thread (where handlers cannot be set) it installs nothing and reports nothing.

    In a command, the work in flight has $MLP_JAX_STOP_GRACE seconds (300) from the first
    signal to end, and the save after it as long again: past them the process ends in one
    line, as a kill would end it, whose saves the next run recovers from. A save into a
    stalled bucket held a stopped run for ever, deaf to every signal but SIGKILL.
    """

    def __init__(self):
        self.signal_number = None
        self._previous = {}
        self._grace_seconds = None
        self._grace = None
        self._told = False

    def __enter__(self):
        grace = environment_number("MLP_JAX_STOP_GRACE", 300.0)
        if threading.current_thread() is threading.main_thread():
            for sig in TERMINATING:
                handler = signal.getsignal(sig)
                if handler is not signal.SIG_IGN:  # `nohup` asked for it to be ignored.
                    self._previous[sig] = signal.signal(sig, self._request)
        # Only a command's process ends so: a notebook's kernel is the user's.
        if self._previous.get(signal.SIGTERM) is _raise_stopped:
            self._grace_seconds = grace
        global _dropped
        if _stopping:  # A stop Python dropped before this run took the signals: the first
            self._request(_stopping, None)  # step ends the run, saved (it ran to its end).
            _dropped = False  # Honoured here: not raised again as it is sent again.
        return self

    def _request(self, signal_number, _frame):
        first = self.signal_number is None
        self.signal_number = signal_number
        if first:
            self._start_grace()

    def _start_grace(self) -> None:
        """(Re)starts the wait after which a stopped command ends without its work."""
        if self._grace_seconds is None or self.signal_number is None:
            return
        if self._grace is not None:
            self._grace.cancel()
        # Event.wait overflows past TIMEOUT_MAX (MLP_JAX_STOP_GRACE=1e300).
        seconds = min(self._grace_seconds, threading.TIMEOUT_MAX)
        arguments = (self._grace_seconds, self.signal_number)
        self._grace = threading.Timer(seconds, _end_after_grace, arguments)
        self._grace.daemon = True
        self._grace.start()

    def agreed_signal(self) -> int:
        """The signal any process received (0 if none); the same on every process. Asked
        between steps: from then, the save after the step has a grace of its own, on every
        process."""
        from mlp_jax import parallel  # noqa: PLC0415  (JAX, only once work is under way)

        agreed = parallel.max_over_processes(self.signal_number or 0)
        if agreed:  # A host the notice did not reach stops too, with the same grace.
            self.signal_number = self.signal_number or agreed
            self._start_grace()
            self._told = True  # The work says it now: not delivered again at the end.
        return agreed

    def __exit__(self, kind, *_):
        if self._grace is not None:
            self._grace.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if kind is None and self.signal_number is not None and self._previous and not self._told:
            # It came after the work's last look (as a finished run rotated its old
            # checkpoints out): delivered now, as it would have been, not dropped (exit 0
            # and no line, 13 s after a SIGTERM; trial 12).
            signal.raise_signal(self.signal_number)


def _end_after_grace(grace: float, signal_number: int) -> None:
    error_line(
        f"stopped by {name(signal_number)}: the work in flight did not end within {grace:g} s "
        "of it (a stalled disk or bucket?), so the process ends without it; what was saved "
        "before is kept: rerun the same command to resume (MLP_JAX_STOP_GRACE sets the wait)"
    )
    os._exit(128 + signal_number)
