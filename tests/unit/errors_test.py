"""mlp_jax.errors: its command path, in a process of its own (what it does to the
interpreter, its garbage collector, is the process's, not a test session's), and the one
lines of the errors that reach it."""

import errno
import subprocess
import sys
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


def test_a_command_imports_without_the_collector_and_runs_with_it_on_its_imports_frozen():
    # Off while the modules are imported and the flags parsed (a tenth of a second of JAX's
    # start); on for the work, or a long run's cycles would never be freed.
    result = subprocess.run(
        [sys.executable, "-c", COMMAND], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flags False", "main True True"]


def test_a_bucket_that_refuses_or_does_not_answer_is_one_line_and_other_errors_are_not(capsys):
    from gcsfs.retry import HttpError  # noqa: PLC0415  (the gcs extra's)

    unavailable = errors.cloud_storage_line(HttpError({"code": 503, "message": "Backend Error"}))
    assert unavailable == (
        "Cloud Storage answered HTTP 503 through every retry (Backend Error, 503); what was "
        "saved is kept: rerun the same command to go on"
    )
    credentials = errors.cloud_storage_line(HttpError({"code": 401, "message": "Invalid"}))
    assert credentials.startswith("Cloud Storage refused the request with HTTP 401 (Invalid")
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
    # As a command ends: that line, status 2.
    with pytest.raises(SystemExit) as ended, errors.one_line_errors():
        raise HttpError({"code": 503, "message": "Backend Error"})
    assert ended.value.code == 2 and capsys.readouterr().err == f"error: {unavailable}\n"
    # A request gcsfs got wrong (a bug), and statuses of other origins, keep their traceback.
    assert errors.cloud_storage_line(HttpError({"code": 400, "message": "Bad"})) is None
    assert errors.cloud_storage_line(ValueError("PERMISSION_DENIED: /tmp/x")) is None


def test_a_connection_that_failed_through_the_retries_is_one_line_naming_the_network():
    import aiohttp  # noqa: PLC0415  (gcsfs's client)

    refused = OSError(errno.ECONNREFUSED, "Connect call failed ('10.0.0.2', 443)")
    gone = aiohttp.ClientConnectorError(mock.Mock(ssl=True), refused)  # As gcsfs raises it.
    assert errors.os_error_line(gone).startswith(
        "a connection: Connect call failed ('10.0.0.2', 443): check the network (and the "
        "bucket's endpoint), then rerun the same command"
    )
