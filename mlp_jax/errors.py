"""Errors a user can fix, and the one place where they become one line on stderr.

Every command (`mlp_jax.main`, the benchmarks, the studies' `experiments.studies.*.run`)
runs through `run_command`: its absl flags parsed by `parse_flags`, its main run through
`command`. So a bad flag, a bad config, bad data, a file system a user can mend, an
out-of-memory model or a signal ends
the program with `error: ...` on one line, a non-zero exit and no traceback, and the process
ends however its threads stand. The error names the path and the flag that moves it
(`name_path`, `os_error_line`)."""

import contextlib
import difflib
import errno
import functools
import gc
import importlib
import logging as stdlib_logging
import math
import os
import re
import resource
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import NoReturn
from urllib.parse import unquote

from absl import app, flags, logging

from mlp_jax import dependencies
from mlp_jax.starting import signal_name, stopped_while_starting


class UserError(Exception):
    """A problem the user can fix: bad input, missing data, a bad config value.

    The message is one line that names the file or key at fault and says how to fix it.

    Attributes:
      exit_code: the process's exit status when this error ends it.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def environment_number(name: str, default=None, *, whole: bool = False, env=os.environ):
    """The environment variable `name` (of `env`) as a number (`default` where it is unset or
    empty): a whole number >= 0, or with `whole` False a finite number > 0 (a time, say).

    Raises:
      UserError: it is set to anything else, naming the variable.
    """
    value = env.get(name, "").strip()
    if not value:
        return default
    if whole:
        if value.isascii() and value.isdigit():  # Not "²", a digit int() refuses.
            return int(value)
        wanted = "a whole number >= 0"
    else:
        with contextlib.suppress(ValueError):
            if math.isfinite(number := float(value)) and number > 0:
                return number
        wanted = "a number > 0"
    raise UserError(f"{name}={value!r} is not {wanted}; set it to one, or unset it")


class StoppedExit(SystemExit):
    """The exit of a command a terminating signal stopped wherever it was (its line is
    written): `command` ends the process at once."""


def fail(message: str, exit_code: int = 2) -> NoReturn:
    """Prints `error: MESSAGE` (`error_line`) and exits with `exit_code`."""
    error_line(_names_escaped(message))
    sys.exit(exit_code)


def _names_escaped(message: str) -> str:
    """`message` with each newline of a path a flag named (`name_path`) written as Python
    writes it: the line ends at the message's first newline, which cut such a path short."""
    for path in _PATH_FLAGS:
        if "\n" in path:
            message = message.replace(path, path.replace("\n", "\\n"))
    return message


def error_line(message: str) -> None:
    """Prints `error: MESSAGE` (its first line that says something) on stderr. Where stderr
    was closed from the start (`2>&-`) the line goes nowhere, and the exit status says it:
    `print` would send it into stdout, which may be the command's product."""
    if sys.stderr is None:
        return
    with contextlib.suppress(OSError, ValueError):  # A full or closed stream: the status.
        print(f"error: {_first_words(message) or 'failed'}", file=sys.stderr, flush=True)


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of `error`'s message that says something (or its class's name), cut
    between words to about `limit` characters: it goes into a line of a warning or an
    error."""
    line = _first_words(str(error)) or type(error).__name__
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def _first_words(message: str) -> str:
    """The first line of `message` that is not blank (a library's may start with one)."""
    return next((line.strip() for line in message.splitlines() if line.strip()), "")


def closest(key: str, known: Iterable[str]) -> str:
    """ " (did you mean 'a' or 'b'?)" for the known names closest to `key`, or ""."""
    matches = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


# What is wrong with a path, and the fix, for the errors of the file system a user can fix:
# by errno, and by class for the errors raised without one (etils raises IsADirectoryError
# with only a message).
_OS_ERROR_FIXES = {
    errno.ENOSPC: "the device holding it is full; free space there or use another {flag}",
    errno.EDQUOT: "the disk quota is used up; free space or use another {flag}",
    errno.EACCES: "not allowed for this user; fix its permissions or use another {flag}",
    errno.EPERM: "not allowed for this user; fix its permissions or use another {flag}",
    errno.EROFS: "the file system is read-only; use a {flag} on a writable one",
    errno.ENOTDIR: "a file stands where a folder is needed; move it away or use another {flag}",
    errno.EISDIR: "a folder stands where a file is needed; move it away or use another {flag}",
    errno.EEXIST: "something of that name is in the way; move it away or use another {flag}",
    errno.ENAMETOOLONG: "a name in it is too long for the file system; use a shorter {flag}",
    errno.ENOENT: "no such file or folder; check the {flag}",
    errno.EMFILE: "this process may open no more files; raise `ulimit -n` and rerun",
    errno.ENFILE: "the system may open no more files; close other programs and rerun",
    errno.ELOOP: "a symbolic link in it points in a loop; fix the link or use another {flag}",
    errno.EFBIG: "larger than this process may write (`ulimit -f`); raise the limit and rerun",
    errno.ETXTBSY: "busy (another program is using it); wait for it or use another {flag}",
    errno.EBUSY: "busy (a mount point, or in use); unmount or free it, or use another {flag}",
}
_OS_ERROR_CLASSES = {
    FileNotFoundError: errno.ENOENT,
    IsADirectoryError: errno.EISDIR,
    NotADirectoryError: errno.ENOTDIR,
    FileExistsError: errno.EEXIST,
    PermissionError: errno.EACCES,
}
# Substrings of the messages of libraries that report a full disk without an errno
# (TensorStore, Orbax): a full disk is not an out-of-memory error.
_DISK_FULL_SIGNS = ("No space left on device", "ENOSPC", "Disk quota exceeded")
# How gcsfs reports a bucket's HTTP 403 (an OSError without an errno or a file name):
# "Forbidden: <the JSON API's path>\n<GCS's words, naming the account and the permission it
# lacks>"; the API's path is b/BUCKET/o[/OBJECT, URL-quoted] (an upload's names no object).
_FORBIDDEN = "Forbidden: "
_GCS_API_PATH = re.compile(r"\bb/([^/\s?]+)(?:/o(?:/([^\s?]+))?)?")
_BUCKET_ACCESS = "give that account this access to the bucket, or use another {flag}"

# The flag that names each path a command was given (its workdir, data, export folder...),
# registered by the command, so that an error about a file under it names the flag that
# moves it.
_PATH_FLAGS: dict[str, str] = {}


def name_path(path, flag: str) -> None:
    """Records that `path` (a folder or file the user gave) is set by `flag`, e.g.
    name_path(workdir, "--workdir"): errors about anything under it name that flag."""
    _PATH_FLAGS[os.fspath(path).rstrip("/")] = flag


def flag_for(path) -> str:
    """The flag that moves `path`: that of the nearest named folder holding it, else "path"."""
    text = os.fspath(path)
    holders = [p for p in _PATH_FLAGS if text == p or text.startswith(p + "/")]
    return _PATH_FLAGS[max(holders, key=len)] if holders else "path"


def _errno_of(error: OSError) -> int | None:
    if error.errno in _OS_ERROR_FIXES:
        return error.errno
    for cls, number in _OS_ERROR_CLASSES.items():
        if isinstance(error, cls):
            return number
    if is_disk_full(error):
        return errno.ENOSPC
    if str(error.strerror or error).startswith(_FORBIDDEN):  # (See os_error_line.)
        return errno.EACCES
    return None


def os_error_line(error: OSError, path=None, flag: str | None = None) -> str | None:
    """One line for a file-system error a user can fix (the path, what is wrong, the fix
    naming the flag that moves the path), or None for one that is not of that kind (a
    failing disk, EIO, is not).

    Args:
      error: the error.
      path: the path the operation was on, where the error does not name one.
      flag: the flag that moves the path (default: the one registered by `name_path`).
    """
    number = _errno_of(error)
    if number is None:
        return None
    text = str(error.strerror or error)
    forbidden = text.startswith(_FORBIDDEN)  # A bucket's 403, as gcsfs says it.
    where = error.filename or path or (_gcs_object(text) if forbidden else None)
    if where is None:
        where = "a file"
        flag = flag or "path"
    flag = flag or flag_for(where)
    other = f" -> {error.filename2}" if error.filename2 else ""
    if forbidden:  # GCS's words, which name the account and the permission it lacks.
        words = text.partition("\n")[2].strip()
        what, fix = _FORBIDDEN + words if words else "Forbidden", _BUCKET_ACCESS
    else:
        what, fix = error.strerror or os.strerror(number), _OS_ERROR_FIXES[number]
    what = " ".join(what.split())  # One line, whatever the library's message holds.
    return f"{where}{other}: {what}: {fix.format(flag=flag)}"


def _gcs_object(message: str) -> str | None:
    """gs://BUCKET[/OBJECT], from the JSON API's path in gcsfs's message."""
    found = _GCS_API_PATH.search(message.partition("\n")[0])
    if found is None:
        return None
    bucket, name = found.groups()
    return f"gs://{bucket}/{unquote(name)}" if name else f"gs://{bucket}"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says a disk is full (TensorStore and Orbax say so in words)."""
    return any(sign in str(error) for sign in _DISK_FULL_SIGNS)


# How JAX's runtime reports, in a process of a multi-process run, that another one has
# gone: its collectives' connection closed (Gloo, on CPUs), or the coordination service's
# heartbeat lost.
_PEER_GONE_SIGNS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "heartbeat timeout",
    "tasks are unhealthy",
)


def is_peer_gone(error: BaseException) -> bool:
    """Whether `error` is JAX's runtime saying that another process of this run ended (its
    own output says why): this one cannot go on without it."""
    return type(error).__name__ == "JaxRuntimeError" and any(
        sign in str(error) for sign in _PEER_GONE_SIGNS
    )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is XLA's (or the host's) failure to allocate memory (a full disk, which
    TensorStore reports as RESOURCE_EXHAUSTED too, is not)."""
    if is_disk_full(error):
        return False
    if isinstance(error, RuntimeError) and str(error) == "can't start new thread":
        return True  # No memory left for a thread's stack (a low ulimit -v, say).
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)


# Cloud Storage refusing this machine's account, or not answering, as the error reaches a
# command after its clients' own retries: gcsfs's HttpError by its HTTP code (a 403 it raises
# as an OSError: see os_error_line; a 502, as requests' ProxyError), a failed connection by
# aiohttp's class (refused, reset, timed out, a name not resolved), TensorStore's (Orbax's
# arrays) by its status, which it gives before the HTTP details.
_REFUSED_CODES, _UNAVAILABLE_CODES = {401}, {408, 429, 500, 502, 503, 504}
_TENSORSTORE_REFUSALS = ("PERMISSION_DENIED: ", "UNAUTHENTICATED: ")
_RERUN = "rerun the same command to go on: what was saved is kept"
_NETWORK = f"check the network, then {_RERUN}"
# How TensorStore (Orbax's arrays) says its retries of a request all failed to connect or
# to hear an answer: "ABORTED: All 32 retry attempts failed: CURL error <curl's words>".
_TENSORSTORE_NO_CONNECTION = "retry attempts failed: CURL error "
# The seconds of silence after which each bucket request fails (mlp_jax.files sets it up).
BUCKET_TIMEOUT_VARIABLE = "MLP_JAX_BUCKET_TIMEOUT"


def _is_a(error: BaseException, module: str, name: str) -> bool:
    """Whether `error` is of the class `name` of the package `module`, or of a subclass of
    it, without importing that package."""
    return any(c.__name__ == name and c.__module__.startswith(module) for c in type(error).__mro__)


def cloud_storage_line(error: BaseException) -> str | None:
    """One line for a bucket that refuses this machine's account, or that did not answer
    through the clients' retries; None for anything else."""
    refused = "give this machine's account access to the bucket (or renew its credentials)"
    code = int(getattr(error, "code", None) or 0) if _is_a(error, "gcsfs", "HttpError") else 0
    if _is_a(error, "requests", "ProxyError"):  # gcsfs's 502.
        code = 502
    if code in _REFUSED_CODES:
        reason = first_line(error)
        return f"Cloud Storage refused a request with HTTP {code} ({reason}); {refused}"
    if code in _UNAVAILABLE_CODES:
        return f"Cloud Storage answered HTTP {code} through every retry; {_RERUN}"
    # A refused connection is the network's (a firewall's EPERM too), a file limit is not.
    file_limit = getattr(error, "errno", None) in (errno.EMFILE, errno.ENFILE)
    if _is_a(error, "aiohttp", "ClientConnectionError") and not file_limit:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        reason = first_line(getattr(error, "strerror", None) or error)
        return f"{where}no connection to Cloud Storage through every retry ({reason}); {_NETWORK}"
    if _is_a(error, "fsspec", "FSTimeoutError"):  # gcsfs's requests met only silence.
        return (
            f"{_bucket_named(error)}no answer from Cloud Storage through every retry (each "
            f"request waits {_bucket_timeout()} for a byte; ${BUCKET_TIMEOUT_VARIABLE} sets it); "
            f"{_NETWORK}"
        )
    text = " ".join(str(error).split())
    if _TENSORSTORE_NO_CONNECTION in text:  # Refused, unresolved, or silent (as above).
        reason = first_line(text.partition(_TENSORSTORE_NO_CONNECTION)[2], 160)
        return f"no connection to Cloud Storage through every retry ({reason}); {_NETWORK}"
    if text.startswith(_TENSORSTORE_REFUSALS) and "[http_response_code=" in text:
        return f"Cloud Storage refused: {first_line(text.partition(' [http_')[0], 300)}; {refused}"
    return None


def _bucket_named(error: BaseException) -> str:
    """ "PATH: " for the path `error` names, else for the buckets the command was given (an
    error raised inside a library's call names none), else ""."""
    named = getattr(error, "filename", None) or ", ".join(
        f"{flag}={path}" for path, flag in _PATH_FLAGS.items() if "://" in path
    )
    return f"{named}: " if named else ""


def bucket_timeout_seconds() -> float:
    """The seconds a bucket's request may go without a byte: $MLP_JAX_BUCKET_TIMEOUT (60).

    Raises:
      UserError: the variable is not a number > 0.
    """
    return environment_number(BUCKET_TIMEOUT_VARIABLE, 60.0)


def _bucket_timeout() -> str:
    """The bound on a bucket request's silence in force, as the line names it."""
    try:
        return f"{bucket_timeout_seconds():g} s"
    except UserError:  # (Named by its own line where it is read.)
        return "its seconds"


class _RaisedNext(stdlib_logging.Filter):
    """Drops gcsfs's log of the exception it raises next, when its retries are spent or the
    error is not one it retries: a traceback in the log, then the same error raised to the
    command, whose one line (or traceback, for a bug) reports it."""

    def filter(self, record: stdlib_logging.LogRecord) -> bool:
        return not (record.exc_info and record.funcName == "retry_request")


@contextlib.contextmanager
def one_line_errors():
    """Ends the program with one line for a UserError, a file-system error a user can fix
    (a full disk, a read-only or misplaced path), a bucket refusing the account or not
    answering (`cloud_storage_line`), an out-of-memory error, another process of the run
    gone (`is_peer_gone`: that one shows its own error), or a signal that stopped it
    (`mlp_jax.signals`). Anything else is a bug and keeps its traceback."""
    try:
        yield
    except UserError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt as e:  # Ctrl-C, or any signal `signals.exit_on_signals` took.
        if hasattr(e, "exit_code"):  # Work stopped after saving (`signals.Interrupted`).
            fail(str(e), e.exit_code)
        number = getattr(e, "signal_number", signal.SIGINT)
        error_line(
            f"stopped by {signal_name(number)}; what was saved before it is kept; "
            "rerun the same command to go on"
        )
        raise StoppedExit(128 + number) from None
    except OSError as e:  # (A failed connection is one too: see cloud_storage_line.)
        line = cloud_storage_line(e) or os_error_line(e)
        if line is None:
            raise
        fail(line)
    except Exception as e:
        line = cloud_storage_line(e)
        if line is not None:
            fail(line)
        if is_peer_gone(e):
            fail(
                f"another process of this run ended ({first_line(e, 160)}); its own "
                "output says why; what was saved is kept: mend that, then rerun the same "
                "command on every host",
                1,
            )
        if is_disk_full(e):
            fail(
                f"the disk is full ({first_line(e, 160)}); free space on the device "
                "holding the workdir, or use another --workdir"
            )
        if not is_out_of_memory(e):
            raise
        from mlp_jax import config  # noqa: PLC0415  (config imports this module)

        sizing = sorted(config.names(lambda field: bool(field.sizes)))
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        under, fix = "", "lower the sizes that set it"
        if limit != resource.RLIM_INFINITY:  # The sizes may not be what ran out.
            under = f" under this process's memory limit ({limit // 2**20:,} MiB, ulimit -v)"
            fix = "raise it, or lower the sizes"
        fail(
            f"out of memory ({first_line(e, 160)}){under}; {fix}: config.{', config.'.join(sizing)}"
        )


# Seconds a command's process may take to end once its work is done or has failed: time for
# the interpreter's own shutdown, not for a thread (Orbax's, after a failed save) that would
# wait for ever.
EXIT_GRACE_SECONDS = 30.0


def command(main: Callable[..., None]) -> Callable[..., None]:
    """A command's `main`, run as every mlp_jax command runs: a terminating signal stops it
    in one line (`mlp_jax.signals.exit_on_signals`), a user's error is one line
    (`one_line_errors`), and however it ends, the process ends within EXIT_GRACE_SECONDS of
    it, with the status it chose, whatever threads are left, and without the interpreter's
    last sweep of its heap (`_leave_the_heap_to_the_exit`). Stopped by a signal wherever
    it was (not between epochs, where `signals.StopRequests` holds one), it ends at once,
    its line written: the interpreter's exit, tearing down JAX's runtime under work cut off
    mid-call, crashed the process after its line (SIGSEGV, or SIGABRT on "pure virtual
    method called": one stop in five of a benchmark's timing loop, 2-core Xeon), and what
    must be closed was closed as the stop went up to here.

    `run_command` runs every command's main through it.
    """

    @functools.wraps(main)
    def run(*args):
        from mlp_jax import files, signals  # noqa: PLC0415  (both import this module)

        signals.exit_on_signals()
        _collect_from_here()
        # For the whole process: Orbax's save threads may still use gcsfs after the line.
        stdlib_logging.getLogger("gcsfs").addFilter(_RaisedNext())
        code, stopped = 1, False
        try:
            with one_line_errors():
                files.raise_open_file_limit()
                main(*args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
            stopped = isinstance(e, StoppedExit)
            raise
        finally:
            _end_at_once_on_signals(code, signals.TERMINATING)
            _end_within(EXIT_GRACE_SECONDS, code)  # First: a flush below may block.
            if stopped:
                _exit_now(code)
            _leave_the_heap_to_the_exit()

    return run


def _collect_from_here() -> None:
    """Turns the garbage collector back on (`run_command` turns it off while the command's
    modules are imported and its flags parsed), leaving out of its passes every object made
    so far: modules, functions and classes, which live as long as the process. The passes
    over JAX's and Flax's take time and free nothing: about a tenth of a second of a
    command's start (2-core Xeon). `tests/unit/errors_test.py` holds both states."""
    gc.freeze()
    gc.enable()


def _leave_the_heap_to_the_exit() -> None:
    """Spares the ending process the garbage collector's last pass over the heap JAX, Flax
    and Orbax built: a quarter to half a second of a short run's process (measured on a
    2-core Xeon), freeing memory the exit frees anyway. What the exit must do still happens:
    the exit handlers run, the modules and every object outside a reference cycle are
    finalized, the streams flushed; only objects left in cycles are not, which Python never
    promises at exit. Files a command writes it closes itself."""
    gc.freeze()


def _end_at_once_on_signals(code: int, numbers: Iterable[int]) -> None:
    """Makes each of the signals `numbers` not ignored end the process at once with `code`:
    the command is over, so a stop that arrives while the process ends (a supervisor
    stopping it as it prints its last line) has no work to save. Raised as a stop, it was a
    traceback from the exit handlers and the wrong status."""
    for number in numbers:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, lambda *_: _exit_now(code))


def _exit_now(code: int) -> NoReturn:
    """Ends the process with `code` at once, its output streams flushed: no exit handler,
    no finalizer, whatever threads are left."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _end_within(seconds: float, code: int) -> None:
    """Ends the process with `code` after `seconds`, unless it has ended by then: a daemon
    timer, so it keeps nothing alive itself. It flushes nothing (a flush may be what blocks;
    every line the commands print is flushed as it is printed)."""
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


def _refuse_flags_given_twice(argv: list[str]) -> None:
    """Refuses a flag given more than once (on the command line, in its flag files, as
    `--X` and `--noX`): absl takes the last, and the first (a second --workdir appended to
    make's, say) was passed over without a word. A config field's changes (--config.KEY) may
    repeat, the last taken, as a script's later change overrides its base's.

    Raises:
      flags.Error: a flag file cannot be read (absl's own line).
    """
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
    words = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    # A flag's name, not a value of the flag before it (`--config.seed -1`).
    named = [re.fullmatch(r"--?([A-Za-z_][\w.]*)(=.*)?", w, re.S) for w in words]
    names = [_without_no(m.group(1)) for m in named if m]
    for name in dict.fromkeys(names):
        count = names.count(name)
        if count == 1 or name == "flagfile" or name.startswith("config."):
            continue
        if name == "config":  # absl said "flag 'config.KEY' is defined twice" of overrides.
            fail(
                f"--config is given {count} times; give one experiment file, and change its "
                "fields with --config.KEY=VALUE"
            )
        fail(f"--{name} is given {count} times; give it once")


def _without_no(name: str) -> str:
    """A boolean flag's name for its `--noX` form."""
    if name.startswith("no") and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean:
        return name[2:]
    return name


def _refuse_flag_files_that_are_no_files(argv: list[str]) -> None:
    """Refuses a --flagfile that is not a regular file before absl opens it: a named pipe
    held every command for ever, without a word (trial 10), as one given to --config did."""
    for word, following in zip(argv, [*argv[1:], None], strict=True):
        path = word.split("=", 1)[1] if word.startswith(("--flagfile=", "-flagfile=")) else None
        if word in ("--flagfile", "-flagfile"):
            path = following
        if path and os.path.exists(path) and not os.path.isfile(path):
            from mlp_jax import files  # noqa: PLC0415  (files imports this module)

            fail(f"--flagfile={path} is {files.kind(files.as_path(path))}, not a file of flags")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parser with every flag or config error reported as one line; `run_command`
    parses with it. (What ml_collections logs while it loads a
    config file, a `get_config()` returning None, say, is said by that one line instead.)"""
    path = _config_path(argv)
    if path and os.path.exists(path) and not os.path.isfile(path):  # Never open a pipe.
        from mlp_jax import files  # noqa: PLC0415  (files imports this module)

        fail(f"--config={path} is {files.kind(files.as_path(path))}, not an experiment file")
    previous = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        _refuse_flags_given_twice(argv)
        return flags.FLAGS(argv)
    except flags.Error as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # A file to predict whose name starts with '-' ("-img.png") is read as a flag.
        dashed = isinstance(e, flags.UnrecognizedFlagError) and next(
            (word for word in argv[1:] if word.startswith("-") and os.path.exists(word)), None
        )
        if dashed:
            fail(
                f"{dashed}: a name starting with '-' is read as a flag; give it as ./{dashed}, "
                f"or after the flags and a -- (... -- {dashed})"
            )
        if "Traceback (most recent call last):" in lines:
            # The config file raised: ml_collections puts its traceback after the first
            # line, which names no reason. The exception's own line does.
            fail(f"{lines[0]} {lines[-1]}; fix the experiment file")
        fail(f"{lines[0]} (see --helpshort)")
    except Exception as e:  # noqa: BLE001  (config files can raise anything when loaded)
        fail(_config_error(e, argv))
    except SystemExit as e:  # absl's --help exits too: only the file's own exit is refused.
        file = path and _config_file(path)
        if not file or not ran_in(e, file):
            raise
        fail(exited_while_loading(file, e))
    finally:
        if not (flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present):
            logging.set_verbosity(previous)


def ran_in(error: BaseException, path: str | os.PathLike) -> bool:
    """Whether `error` was raised while the Python file at `path` ran (its frame is in the
    error's traceback: the file's own code, or what it called)."""
    target = os.path.realpath(path)
    frames = traceback.walk_tb(error.__traceback__)
    return any(os.path.realpath(frame.f_code.co_filename) == target for frame, _ in frames)


def exited_while_loading(path: str | os.PathLike, error: SystemExit) -> str:
    """The line for a user's Python file (a config, a model) that ended the process as it
    was loaded: an exit status of 0 said a run that never started had succeeded."""
    return (
        f"{os.fspath(path)}: ended the process (sys.exit({error.code!r})) as it was loaded; "
        "such a file defines what it is read for (get_config(), a model) and returns"
    )


def run_command(
    main: Callable[..., None],
    define_flags: Callable[[], None] | None = None,
    arguments: bool = False,
    start_devices: bool = False,
) -> None:
    """Runs a command from its `if __name__ == "__main__":` block: defines its flags, parses
    the command line (`parse_flags`), holds back absl's INFO logs unless --verbosity is given,
    starts JAX's devices where asked, and runs `main` through `command`.

    Args:
      main: the command; called with no argument, or with the words after the flags when
        `arguments` is true.
      define_flags: defines the command's absl flags; called here, not when the module is
        imported, since the commands import each other's modules and absl's one registry
        allows each flag name once. None where the module defines them itself.
      arguments: whether the command takes words after its flags; if not, any is an error.
      start_devices: whether to start JAX's devices before `main`
        (`mlp_jax.parallel.start_devices`: devices the environment cannot give are one line,
        not a fault of whatever met them first): for a command that works on them in its own
        process. Not for one that leaves the devices to the processes it starts (a
        benchmark's peers, which would find them held), nor for the training command, which
        starts a multi-process runtime first. (On a GPU, JAX takes most of its memory as
        it starts them.)
    """
    try:
        _start(main, define_flags, arguments, start_devices)
    except KeyboardInterrupt as e:  # Ctrl-C before `command` took the signals: JAX's
        # import, the flags, the --config file (its main's own stops are StoppedExit).
        number = getattr(e, "signal_number", signal.SIGINT)
        error_line(stopped_while_starting(number))
        raise StoppedExit(128 + number) from None


def _start(main, define_flags, arguments: bool, start_devices: bool) -> None:
    """`run_command`'s work: JAX imported, the flags defined and parsed, `main` run."""
    gc.disable()  # Until the command's main starts: see `_collect_from_here`.
    import_jax()
    import jax  # noqa: PLC0415

    if jax.config.jax_disable_jit:  # Found after the data, the workdir and a compilation.
        fail(
            "JAX_DISABLE_JIT is set: mlp_jax's commands compile their programs ahead of time, "
            "which JAX cannot do without jit; unset it (to step through a step, call "
            "mlp_jax.steps.train_step under jax.disable_jit() in Python)"
        )
    _refuse_flag_files_that_are_no_files(sys.argv)
    if define_flags is not None:
        try:
            define_flags()
        except flags.CantOpenFlagFileError as e:  # Defining --config reads them already.
            words = first_line(e).removeprefix("ERROR::").strip()
            fail(f"{words}; fix the --flagfile path or the file")

    def run(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:
            # Orbax and JAX log much at INFO; --verbosity=0 brings it back.
            logging.set_verbosity(logging.WARNING)
        if start_devices:
            importlib.import_module("mlp_jax.parallel").start_devices()  # (It imports this.)
        if arguments:
            main(argv[1:])
            return
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --helpshort)")
        main()

    app.run(command(run), flags_parser=parse_flags)


def import_jax() -> None:
    """Imports JAX, which every command uses, before anything else does: JAX reads its
    JAX_* settings from the environment as it is imported, and a value it refuses was taken
    for a fault of whatever imported it first (the --config file), or was a traceback where
    a module imports JAX first. Called by `run_command`, and by the packages of the studies
    and the benchmarks as they are imported, before their modules import JAX.

    Raises:
      SystemExit: one line naming the environment variable.
    """
    try:
        import jax  # noqa: F401, PLC0415
    except ValueError as e:
        # JAX's two wordings: of a setting's value, and of a true-or-false one's.
        refused = re.fullmatch(r'Invalid value "(.*)" for JAX flag (\w+)', str(e), re.S)
        refused = refused or re.fullmatch(
            r"invalid truth value '(.*)' for environment '(\w+)'", str(e), re.S
        )
        if refused is None:
            raise
        value, name = refused.groups()
        fail(
            f"{name.upper()}={value!r} is not a value JAX takes for that setting; fix or unset "
            "that environment variable"
        )


def check_plot_backend() -> None:
    """Refuses a $MPLBACKEND matplotlib does not know before anything is made, by importing
    the plots (matplotlib checks it as it is imported: a traceback after a run had trained,
    or as a study started), only where it is set. Called as a run starts
    (`train.train_and_evaluate`) and by the studies' package as a command starts.

    Raises:
      UserError: naming the variable (`mlp_jax.plots`).
    """
    if os.environ.get("MPLBACKEND"):
        importlib.import_module("mlp_jax.plots")


def _config_error(error: Exception, argv: list[str]) -> str:
    """One line for an error raised while a --config file was loaded or overridden."""
    overrides = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    path = _config_path(argv)
    if path and not os.path.exists(_config_file(path)):
        return f"--config={path}: no such file; give one, e.g. experiments/mlp_scratch.py"
    if isinstance(error, AttributeError) and "get_config" in str(error) and path:
        return f"{path}: defines no get_config(); an experiment file must (see experiments/)"
    if isinstance(error, AttributeError | KeyError):
        cause = error  # ml_collections wraps a KeyError (whose str is a repr) in AttributeError.
        while cause.args and isinstance(cause.args[0], BaseException):
            cause = cause.args[0]
        text = str(cause.args[0]) if cause.args else str(cause)
        unknown = [o for o in overrides if repr(o.split(".")[-1]) in text]
        if unknown:
            key = unknown[0].split(".")[-1]
            return (
                f"--{unknown[0]}: unknown config key {key!r}"
                f"{closest(key, _known_keys(argv))}; see the experiment file for the keys"
            )
    nested = [o for o in overrides if o.count(".") > 1]  # --config.model.x: model is no dict.
    if isinstance(error, TypeError) and nested:
        group = nested[0].rsplit(".", 1)[0]
        return f"--{nested[0]}: {group} holds no fields to set; set it whole, --{group}=VALUE"
    if missing := dependencies.missing_line(error):  # The Python's fault, not the file's.
        return missing
    reason = f"{type(error).__name__}: {first_line(error)}"
    if path:
        return f"--config={path}: loading it raised {reason}; fix that file"
    return f"--config: {reason}"


def _config_path(argv: list[str]) -> str | None:
    """The file `--config=PATH` or `--config PATH` names in `argv`, if any."""
    for word, following in zip(argv, [*argv[1:], None], strict=True):
        if word.startswith(("--config=", "-config=")):
            return word.split("=", 1)[1]
        if word in ("--config", "-config"):
            return following
    return None


def _config_file(path: str) -> str:
    """The file of a --config value: ml_collections reads "FILE:ARGUMENT" as FILE, its
    get_config() given ARGUMENT (a file whose own name holds ':' is itself)."""
    return path if os.path.exists(path) else path.split(":", 1)[0]


def _known_keys(argv: list[str]) -> list[str]:
    """The top-level keys of the --config file named in `argv` (none if it cannot load)."""
    path = _config_path(argv)
    if path is None:
        return []
    try:
        # Here, not at the top: config imports this module for its errors.
        from mlp_jax.config import load_experiment  # noqa: PLC0415

        return list(load_experiment(path).keys())
    except Exception:  # noqa: BLE001  (the file already failed once; suggestions are a bonus)
        return []
