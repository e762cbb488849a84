"""mlp_jax.errors: its command path, in a process of its own (what it does to the
interpreter, its garbage collector, is the process's, not a test session's), and the one
lines of the errors that reach it."""

import errno
import os
import signal
import subprocess
import sys
import time
import warnings
from unittest import mock

import pytest
from helpers import ROOT

from mlp_jax import errors

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


def _run_source(source: str, *shell: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `source` as a command in a Python process of its own (started through the
    `sh -c` script `shell`, where given; `env` added to this process's environment), to its
    end."""
    command = [sys.executable, "-c", source]
    if shell:
        command = ["sh", "-c", *shell, "sh", *command]
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_a_command_imports_without_the_collector_and_runs_with_it_on_its_imports_frozen():
    # Off while the modules are imported and the flags parsed (a tenth of a second of JAX's
    # start); on for the work, or a long run's cycles would never be freed.
    result = _run_source(COMMAND)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flags False", "main True True"]


def test_a_bucket_that_refuses_or_does_not_answer_is_one_line_and_other_errors_are_not():
    from gcsfs.retry import HttpError  # noqa: PLC0415  (the gcs extra's)
    from requests.exceptions import ProxyError  # noqa: PLC0415

    rerun = "rerun the same command to go on: what was saved is kept"
    unavailable = errors.cloud_storage_line(HttpError({"code": 503, "message": "Backend Error"}))
    assert unavailable == f"Cloud Storage answered HTTP 503 through every retry; {rerun}"
    assert errors.cloud_storage_line(ProxyError()) == unavailable.replace("503", "502")
    credentials = errors.cloud_storage_line(HttpError({"code": 401, "message": "Invalid"}))
    assert credentials.startswith("Cloud Storage refused a request with HTTP 401 (Invalid")
    assert credentials.endswith("account access to the bucket (or renew its credentials)")
    # TensorStore's, from Orbax's save: its status and path, not its HTTP details.
    refused = errors.cloud_storage_line(
        ValueError(
            "PERMISSION_DENIED: Error writing gs://b/run/checkpoints/1/state/_sharding: no "
            "access [http_response_code='403'] [http_response_body='{\"error\": {}}']"
        )
    )
    assert refused.startswith(
        "Cloud Storage refused: PERMISSION_DENIED: Error writing gs://b/run/checkpoints/1/"
        "state/_sharding: no access; give this machine's account access"
    )
    # A request gcsfs got wrong (a bug), and statuses of other origins, keep their traceback.
    assert errors.cloud_storage_line(HttpError({"code": 400, "message": "Bad"})) is None
    assert errors.cloud_storage_line(ValueError("PERMISSION_DENIED: /tmp/x")) is None


def test_a_connection_that_failed_through_the_retries_is_one_line_naming_the_network():
    import aiohttp  # noqa: PLC0415  (gcsfs's client)

    key = mock.Mock(ssl=True, host="storage.googleapis.com", port=443)
    # As gcsfs raises them once its retries are spent: refused, its name not resolved (a VM
    # without its network), the server gone mid-answer, no answer in time.
    failed = [
        aiohttp.ClientConnectorError(key, OSError(errno.ECONNREFUSED, "Connect call failed")),
        aiohttp.ClientConnectorDNSError(key, OSError(-3, "Temporary failure in name resolution")),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    ]
    for error in failed:
        line = errors.cloud_storage_line(error)
        assert line.startswith("no connection to Cloud Storage through every retry ("), line
        assert line.endswith(
            "); check the network, then rerun the same command to go on: what was saved is kept"
        )
    # A local file's time-out is the file's, not the network's: no such line.
    assert errors.cloud_storage_line(TimeoutError(errno.ETIMEDOUT, "Timed out")) is None


def test_a_bucket_silent_through_the_retries_is_one_line_naming_the_network(monkeypatch):
    from fsspec.exceptions import FSTimeoutError  # noqa: PLC0415

    silent = FSTimeoutError()
    silent.filename = "gs://bucket/run"  # (As mlp_jax.files names the path of the call.)
    # TensorStore's, for Orbax's arrays, once its retries are spent.
    curl = "CURL error Timeout was reached: Operation too slow. Less than 1 bytes/sec"
    tensorstore = ValueError(f"ABORTED: All 32 retry attempts failed: {curl} [curl_code='28']")
    lines = [errors.cloud_storage_line(error) for error in (silent, tensorstore)]
    assert lines[0].startswith("gs://bucket/run: no answer from Cloud Storage through every retry")
    assert "(each request waits 60 s for a byte; $MLP_JAX_BUCKET_TIMEOUT sets it)" in lines[0]
    # Raised inside a library's call, naming no path: the buckets the command was given.
    monkeypatch.setenv("MLP_JAX_BUCKET_TIMEOUT", "2.5")
    monkeypatch.setattr(errors, "_PATH_FLAGS", {"gs://b/run": "--workdir", "/tmp/d": "--data"})
    line = errors.cloud_storage_line(FSTimeoutError())
    assert line.startswith("--workdir=gs://b/run: no answer from Cloud Storage"), line
    assert "(each request waits 2.5 s for a byte; $MLP_JAX_BUCKET_TIMEOUT sets it)" in line
    assert lines[1].startswith("no connection to Cloud Storage through every retry (Timeout was")
    for line in lines:
        assert line.endswith(
            "; check the network, then rerun the same command to go on: what was saved is kept"
        )


# A command whose request gcsfs retries in vain; gcsfs logs the error with its traceback,
# then raises it; it logs another after the command's line, as Orbax's save thread may.
UNAVAILABLE_COMMAND = """
import asyncio, logging
from gcsfs import retry
from mlp_jax import errors


@retry.retry_request(retries=1)
async def unavailable():
    raise retry.HttpError({"code": 503, "message": "Backend Error"})


def main():
    try:
        with errors.one_line_errors():
            asyncio.run(unavailable())
    finally:
        try:
            asyncio.run(unavailable())
        except retry.HttpError:
            logging.getLogger("gcsfs").warning("its other records pass")


errors.run_command(main, lambda: None)
"""


def test_a_command_ends_in_the_line_with_no_traceback_logged_by_gcsfs():
    result = _run_source(UNAVAILABLE_COMMAND)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: Cloud Storage answered HTTP 503 through"), lines
    assert len(lines) == 2 and lines[1].endswith("its other records pass"), lines


def test_a_refused_connection_is_the_networks_and_a_file_limit_is_not(capsys):
    import aiohttp  # noqa: PLC0415

    for number, start in (
        (errno.EPERM, "error: no connection to Cloud Storage through"),  # A firewall's.
        (errno.EMFILE, "error: a file: Too many open files: this process may open no more"),
    ):
        refused = OSError(number, os.strerror(number))
        with pytest.raises(SystemExit) as ended, errors.one_line_errors():
            raise aiohttp.ClientConnectorError(mock.Mock(ssl=True), refused)
        assert ended.value.code == 2
        assert capsys.readouterr().err.startswith(start)


def test_the_line_is_the_messages_first_that_says_something(capsys):
    # A library's message may start with a blank line: the line must not be empty.
    message = "\n  \nthe words\nthe details"
    assert errors.first_line(message) == "the words"
    assert errors.first_line(ValueError("\n")) == "ValueError"
    with pytest.raises(SystemExit) as ended, errors.one_line_errors():
        raise errors.UserError(message)
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: the words\n"


# A command stopped by a signal while it works, as a benchmark's timing loop is; an exit
# handler stands for the interpreter's exit, which tore JAX's runtime down under such work.
# The crash itself came one stop in five; the test checks the mechanism that prevents it.
STOPPED_COMMAND = """
import atexit, os, signal, sys
from mlp_jax import errors


def main():
    atexit.register(print, "exit handlers ran", file=sys.stderr)
    print("measured so far", flush=False)
    os.kill(os.getpid(), signal.SIGTERM)


errors.run_command(main, lambda: None)
"""


def test_a_command_stopped_by_a_signal_ends_at_once_after_its_line():
    result = _run_source(STOPPED_COMMAND)
    assert result.returncode == 128 + 15, result.stderr
    assert result.stderr.startswith("error: stopped by SIGTERM;"), result.stderr
    assert "exit handlers ran" not in result.stderr
    assert result.stdout == "measured so far\n"  # Flushed on the way out.


# Stopped as it ends: its exit handlers ask for the stop (a supervisor's SIGTERM as the
# command printed its last line).
STOPPED_AS_IT_ENDS_COMMAND = """
import atexit, os, signal, time
from mlp_jax import errors, progress


def main():
    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))
    progress.emit("the product")


errors.run_command(main, lambda: None)
"""


def test_a_stop_that_arrives_as_a_command_ends_ends_it_with_its_own_status():
    # The stop raised in the exit handlers: "Exception ignored ... Stopped" and status 0, or
    # a traceback and status 1.
    result = _run_source(STOPPED_AS_IT_ENDS_COMMAND)
    assert (result.returncode, result.stdout, result.stderr) == (0, "the product\n", "")


FAILING_COMMAND = """
from mlp_jax import errors, progress


def main():
    progress.emit("the product")
    raise errors.UserError("a user's error")


errors.run_command(main, lambda: None)
"""


def test_a_failing_command_with_stderr_closed_keeps_its_line_out_of_stdout():
    # Started with `2>&-`: print(file=None) would write the line into stdout, the product.
    result = _run_source(FAILING_COMMAND, 'exec "$@" 2>&-')
    assert result.returncode == 2
    assert result.stdout == "the product\n"


# The first signal's stop unwinds through a cleanup slow enough for a second to arrive.
STOPPED_TWICE_COMMAND = """
import os, signal, time
from mlp_jax import errors


def main():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    finally:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)


errors.run_command(main, lambda: None)
"""


def test_a_second_signal_while_the_first_stops_the_command_changes_nothing():
    result = _run_source(STOPPED_TWICE_COMMAND)
    assert result.returncode == 128 + 15, result.stderr
    assert result.stderr.startswith("error: stopped by SIGTERM;"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("can't start new thread")])
def test_out_of_memory_under_a_memory_limit_names_the_limit(capsys, monkeypatch, error):
    # Under `ulimit -v` the sizes may not be what ran out (a thread's stack, say).
    monkeypatch.setattr(errors.resource, "getrlimit", lambda _: (2**30, 2**30))
    with pytest.raises(SystemExit), errors.one_line_errors():
        raise error
    line = capsys.readouterr().err
    assert line.startswith("error: out of memory (") and "(1,024 MiB, ulimit -v)" in line


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--workdir=a", "--workdir=b"], "--workdir is given 2 times; give it once"),
        (["-workdir=a", "--workdir=b"], "--workdir is given 2 times; give it once"),
        # A flag file's took the place of the command line's; X and noX, the last.
        (["--workdir=a", "--flagfile=FLAGFILE"], "--workdir is given 2 times; give it once"),
        (["--alsologtostderr", "--noalsologtostderr"], "--alsologtostderr is given 2 times"),
        (["--config=a.py", "--config", "b.py"], "--config is given 2 times; give one experiment"),
    ],
)
def test_a_flag_given_twice_is_one_line_not_the_last_taken(capsys, tmp_path, argv, line):
    # absl took the last: a --workdir appended to make's trained elsewhere without a word.
    (tmp_path / "flags").write_text("--workdir=b\n")
    argv = [word.replace("FLAGFILE", str(tmp_path / "flags")) for word in argv]
    with pytest.raises(SystemExit):
        errors.parse_flags(["command", *argv])
    err = capsys.readouterr().err
    assert err.startswith(f"error: {line}") and err.count("\n") == 1, err


def test_a_file_named_like_a_flag_is_one_line_saying_how_to_give_it(capsys, tmp_path, monkeypatch):
    # absl's line named an unknown flag 'img.png', and no way to give the image.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-img.png").write_bytes(b"")
    with pytest.raises(SystemExit):
        errors.parse_flags(["command", "-img.png"])
    err = capsys.readouterr().err
    assert err == (
        "error: -img.png: a name starting with '-' is read as a flag; give it as ./-img.png, "
        "or after the flags and a -- (... -- -img.png)\n"
    )
    with pytest.raises(SystemExit):  # An unknown flag that is no file: absl's line.
        errors.parse_flags(["command", "-bogus"])
    assert capsys.readouterr().err.startswith("error: Unknown command line flag 'bogus'")


# A stop signal handled inside a garbage-collection callback (JAX's is one), where Python
# drops what the handler raises: the command printed "Exception ignored ... Stopped" with a
# traceback, went on to status 0 and was deaf to later signals (trial 10).
STOPPED_IN_A_GC_CALLBACK = """
import gc, os, signal, time
from mlp_jax import errors


def main():
    def callback(phase, info):
        if phase == "start" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # The handler runs here, inside the callback.

    sent = []
    gc.callbacks.append(callback)
    gc.collect()
    time.sleep(20)
    print("went on")


errors.run_command(main, lambda: None)
"""


def test_a_stop_dropped_inside_a_gc_callback_still_stops_the_command_in_one_line():
    result = _run_source(STOPPED_IN_A_GC_CALLBACK)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: stopped by SIGTERM") and result.stderr.count("\n") == 1


# Work that never ends once stopped, as a save into a stalled bucket did (deaf to every
# signal but SIGKILL): a command's process ends MLP_JAX_STOP_GRACE seconds after the signal.
STALLED_AFTER_A_STOP = """
import os, signal, time
from mlp_jax import errors, signals


def main():
    with signals.StopRequests():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(20)  # Ever, for the test's purpose.


errors.run_command(main, lambda: None)
"""


def test_a_stopped_command_whose_work_never_ends_ends_after_its_grace():
    started = time.monotonic()
    result = _run_source(STALLED_AFTER_A_STOP, env={"MLP_JAX_STOP_GRACE": "1"})
    assert result.returncode == 128 + 15, result.stderr
    assert result.stderr.startswith("error: stopped by SIGTERM: the work in flight did not end")
    assert result.stderr.count("\n") == 1 and time.monotonic() - started < 30


def test_a_compilation_cache_failing_after_it_was_set_is_passed_over_without_warnings(
    tmp_path, monkeypatch
):
    # On a disk that filled, JAX warned at every program it compiled (8 of them for a run).
    import jax  # noqa: PLC0415

    from mlp_jax import main  # noqa: PLC0415  (the command's module: its flags, not yet)

    monkeypatch.setenv("MLP_JAX_COMPILATION_CACHE", str(tmp_path))
    settings = [
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    ]
    kept = {name: getattr(jax.config, name) for name in settings}  # This worker's own.
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            main._enable_compilation_cache()
            for verb in ("writing", "reading"):  # As JAX's compiler words them.
                entry = f"Error {verb} persistent compilation cache entry for 'jit_x': y"
                warnings.warn(entry, stacklevel=1)
            warnings.warn("another warning", stacklevel=1)
    finally:
        for name, value in kept.items():
            jax.config.update(name, value)
    assert [str(w.message) for w in shown] == ["another warning"]


def test_a_config_fields_change_may_repeat_the_last_taken():
    # As a script's later change overrides its base's (the tests' own TINY, then a row's).
    errors._refuse_flags_given_twice(["command", "--config.lr=0.1", "--config.lr=0.2"])


def test_a_grace_past_what_a_timer_can_wait_waits_as_long_as_it_can():
    # MLP_JAX_STOP_GRACE=1e300 was an OverflowError in the timer's thread at the first
    # signal, and no grace at all.
    from mlp_jax import signals  # noqa: PLC0415

    stop = signals.StopRequests()
    stop._grace_seconds, stop.signal_number = 1e300, signal.SIGTERM
    stop._start_grace()
    time.sleep(0.2)
    assert stop._grace.is_alive()
    stop._grace.cancel()


# The save after a stopped step has a grace of its own: asked between steps, the wait
# starts again.
SAVED_AFTER_A_STOPPED_STEP = """
import os, signal, time
from mlp_jax import errors, parallel, signals


def main():
    with signals.StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.7)  # The step in flight.
        stop.agreed_signal()
        time.sleep(0.7)  # Its save.
    print("ended by itself")


errors.run_command(main, lambda: None)
"""


def test_the_save_after_a_stopped_step_has_a_grace_of_its_own():
    result = _run_source(SAVED_AFTER_A_STOPPED_STEP, env={"MLP_JAX_STOP_GRACE": "1"})
    assert result.returncode == 0 and result.stdout == "ended by itself\n", result.stderr


def test_jit_disabled_ends_commands_only_not_an_import_of_the_studies():
    # A notebook importing a study under JAX_DISABLE_JIT=1 (a debugging setting) must not
    # see its interpreter exit.
    result = _run_source(
        "import experiments.studies.exercises.run; print('imported')",
        env={"JAX_DISABLE_JIT": "1"},
    )
    assert result.returncode == 0 and result.stdout == "imported\n", result.stderr


# Ctrl-C whose Stopped Python dropped: it fell in JAX's garbage-collection callback, and the
# run trained to its end with status 0.
STOP_DROPPED_IN_A_GC_CALLBACK = """
import gc, os, signal, time
from mlp_jax import errors, signals


def main():
    def callback(phase, info):
        gc.callbacks.remove(callback)
        os.kill(os.getpid(), signal.SIGINT)

    gc.callbacks.append(callback)
    gc.collect()
    with signals.StopRequests() as stop:
        print("requested", stop.signal_number)
    time.sleep(1)  # The signal, sent again meanwhile, raises nothing: the run honoured it.
    print("ended")


errors.run_command(main, lambda: None)
"""


def test_a_stop_python_dropped_in_a_gc_callback_is_honoured_by_the_run():
    result = _run_source(STOP_DROPPED_IN_A_GC_CALLBACK)
    assert result.stdout == f"requested {signal.SIGINT}\nended\n", result.stderr
    assert result.returncode == 0 and result.stderr == ""


def test_an_unknown_plot_backend_does_not_end_a_notebooks_import_of_the_studies():
    # The check ended the importing interpreter (SystemExit); in a command it is one line.
    result = _run_source(
        "try:\n    import experiments.studies.exercises.run\nexcept ValueError:\n    pass\n"
        "print('alive')",
        env={"MPLBACKEND": "bogus"},
    )
    assert result.returncode == 0 and result.stdout == "alive\n", result.stderr


def test_a_stop_after_the_works_last_look_is_delivered_as_the_work_ends():
    # A SIGTERM as a finished run rotated its old checkpoints out: exit 0, no line, the work
    # going on 13 s more (trial 12). Delivered now, to the handler it would have met.
    from mlp_jax import signals  # noqa: PLC0415

    received = []
    previous = signal.signal(signal.SIGUSR1, lambda number, _frame: received.append(number))
    try:
        with signals.StopRequests():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)  # Its handler runs: the request is only noted.
            assert received == []
        assert received == [signal.SIGUSR1]
        with pytest.raises(RuntimeError), signals.StopRequests():  # Said by the work itself.
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            raise RuntimeError("the work's own stop")
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
