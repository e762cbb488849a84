"""A real GCS JSON API on 127.0.0.1 for the gs:// tests and benchmarks: gcp-storage-emulator,
in memory, with the generation preconditions it lacks and GCS has.

GCS refuses a write or a delete whose `ifGenerationMatch` names another generation than the
object's (0: the object must not exist) with 412 Precondition Failed, answers a read whose
`ifGenerationNotMatch` is the object's generation with 304 Not Modified, and names the
generation of what it sends in `x-goog-generation`; the emulator does none of these (nor
refuses a range past an object's end).
mlp_jax's lock in a bucket rests on the first (mlp_jax/locks.py), TensorStore's OCDBT
manifests on all three, so they are added here, to the emulator's own handlers, and nothing
else of it is changed. (Without them about one save in ten failed with "Malformed
StorageGeneration": TensorStore asked whether a manifest had changed and got an answer
without its generation.)

  python -m benchmarks.gcs_emulator PORT BUCKET

The clients reach it through STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage) and
TENSORSTORE_GCS_HTTP_URL (TensorStore, which writes Orbax's arrays); `emulator_env` gives
those variables, and `running` starts one for the duration of a `with` block (the gs://
tests' fixture, benchmarks.bucket_cost).
"""

import contextlib
import http.server
import re
import signal
import socket
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


@contextlib.contextmanager
def running(bucket: str = "bucket"):
    """An emulator serving `bucket` in a child process for the duration; yields the
    environment that points a process's GCS clients at it (see `emulator_env`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gcs_emulator", str(port), bucket],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the GCS emulator did not start (exit {process.poll()})")
            time.sleep(0.05)
        yield emulator_env(port)
    finally:
        process.kill()
        process.wait()


def emulator_env(port: int) -> dict[str, str]:
    """The environment that points every client of this process's children at the emulator."""
    url = f"http://127.0.0.1:{port}"
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GOOGLE_CLOUD_PROJECT": "emulator",
        "NO_GCE_CHECK": "true",  # No metadata server to wait for.
        "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credentials to look for.
        # gcsfs's default file system first asks GCS's gRPC control plane for each bucket's
        # type (zonal or not); the emulator has no such API, and each probe waits for it.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def _generation(storage, bucket: str, name: str) -> str | None:
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return None


def _name_of_upload(request) -> str:
    if "name" in request.query:
        return request.query["name"][0]
    meta = request.data.get("meta", request.data) if isinstance(request.data, dict) else {}
    return meta.get("name", "")


def _with_precondition(handler, name_of, missing_is_404: bool):
    """`handler`, refusing with 412 a request whose ifGenerationMatch is not the object's
    generation ("0": the object must not exist), as GCS does. A delete of a missing object
    is GCS's 404 whatever its precondition (`missing_is_404`)."""

    def handle(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch")
        if wanted:
            current = _generation(storage, request.params["bucket_name"], name_of(request))
            if current is None and missing_is_404:
                return handler(request, response, storage, *args, **kwargs)
            if (current or "0") != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return handler(request, response, storage, *args, **kwargs)

    return handle


def _with_generation_headers(handler):
    """`handler` (a download), as GCS answers one: the object's generation in
    `x-goog-generation`, `ifGenerationNotMatch` of that generation answered 304 Not Modified
    (TensorStore asks so whether an object it read before has changed), and a range that
    starts past the object's end 416 (the emulator answers a 206 whose range ends before it
    starts)."""

    def handle(request, response, storage, *args, **kwargs):
        current = _generation(storage, request.params["bucket_name"], request.params["object_id"])
        if current is not None:
            if request.query.get("ifGenerationNotMatch", [None])[0] == current:
                response.status = HTTPStatus.NOT_MODIFIED
                return None
            if request.query.get("ifGenerationMatch", [current])[0] != current:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
            response["x-goog-generation"] = current
            response["x-goog-metageneration"] = "1"
            start = re.match(r"\s*bytes=(\d+)-", request.get_header("range", "") or "")
            size = int(
                storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])[
                    "size"
                ]
            )
            if start and int(start.group(1)) >= size > 0:
                response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
                return None
        return handler(request, response, storage, *args, **kwargs)

    return handle


def _add_preconditions() -> None:
    insert = _with_precondition(objects.insert, _name_of_upload, missing_is_404=False)
    delete = _with_precondition(
        objects.delete, lambda request: request.params["object_id"], missing_is_404=True
    )
    download = _with_generation_headers(objects.download)
    replacements = {objects.insert: insert, objects.delete: delete, objects.download: download}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            handlers[method] = replacements.get(handler, handler)
    # The server's fallback for uploads posted without /upload, and `get`'s for alt=media.
    objects.insert, objects.download = insert, download


def main(port: int, bucket: str) -> None:
    # Not a command of errors.run_command, which takes over the signals from the start-up
    # handler its package set (mlp_jax.starting.stop_at_once_while_starting): Python's own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _add_preconditions()
    # The emulator answers one request at a time; TensorStore sends dozens at once, and the
    # default backlog of 5 refused some of them (an intermittent failed save, 3 in 30).
    http.server.HTTPServer.request_queue_size = 256
    # Serves until the process is ended (the fixture terminates it).
    server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
