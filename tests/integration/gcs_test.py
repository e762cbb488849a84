"""A workdir, data and results in a bucket, through a real GCS API (the `gcs` fixture: a
GCS emulator on 127.0.0.1), whole processes as a TPU VM user runs them, and nothing of
Orbax, TensorStore or etils.epath replaced: what an object store does differently (no
folders, no rename, preconditions, listing, HTTP) is what these exercise. (One test makes
gcsfs's deletions fail midway, as a fault.)"""

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (
    ROOT,
    TINY,
    TUNED_FEATURES,
    config_overrides,
    run_cli,
    start_cli,
    without_tensorflow_env,
)

# What TensorStore's C++ logging prints on its own (its test token's notice), beside the
# commands' lines.
_LIBRARY_LOG = re.compile(r"^[IWE]\d{4} ")


def _own_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not _LIBRARY_LOG.match(line)]


def _bucket(gcs):
    """The emulator's bucket seen from this process (gcsfs, as mlp_jax reaches it)."""
    from gcsfs.core import GCSFileSystem  # noqa: PLC0415

    return GCSFileSystem(endpoint_url=gcs["STORAGE_EMULATOR_HOST"], token="anon")


def _python(gcs, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c CODE ARGS` from the repository root, without TensorFlow, its GCS clients
    pointed at the emulator."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=without_tensorflow_env(gcs),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _fingerprint(evaluated) -> str:
    assert evaluated.returncode == 0, evaluated.stderr
    return json.loads(evaluated.stdout.splitlines()[-1])["params_fingerprint"]


def _train(gcs, workdir, data_dir, epochs, *extra, env=None):
    return run_cli(
        *TINY,
        f"--config.data_dir={data_dir}",
        f"--config.num_epochs={epochs}",
        f"--workdir={workdir}",
        *extra,
        env={**gcs, **(env or {})},
    )


def test_train_resume_eval_predict_and_export_in_a_bucket(gcs, synthetic_full_dir, tmp_path):
    run = f"gs://bucket/{tmp_path.name}/run"
    first = _train(gcs, run, synthetic_full_dir, 2)
    assert first.returncode == 0, first.stderr
    resumed = _train(gcs, run, synthetic_full_dir, 3)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from the checkpoint of epoch 2" in resumed.stdout
    local = _train({}, tmp_path / "local", synthetic_full_dir, 3)
    assert local.returncode == 0, local.stderr
    # The bucket's run is the local run, bit for bit.
    in_bucket = _fingerprint(run_cli("--mode=eval", f"--workdir={run}", env=gcs))
    assert in_bucket == _fingerprint(run_cli("--mode=eval", f"--workdir={tmp_path / 'local'}"))

    bucket = _bucket(gcs)
    prefix = f"bucket/{tmp_path.name}/run"
    log = bucket.cat_file(f"{prefix}/metrics.jsonl").decode()
    records = [json.loads(line) for line in log.splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert len(bucket.cat_file(f"{prefix}/curves.png")) > 10_000
    assert sorted(p.rsplit("/", 1)[1] for p in bucket.ls(f"{prefix}/checkpoints")) == [
        "1",
        "2",
        "3",
    ]

    np.save(tmp_path / "two.npy", np.zeros((2, 784), np.uint8))
    predicted = run_cli("--mode=predict", f"--workdir={run}", str(tmp_path / "two.npy"), env=gcs)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 2, predicted.stderr
    exported = run_cli("--mode=export", f"--workdir={run}", env=gcs)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"exported to {run}/export"
    assert sorted(bucket.ls(f"{prefix}/export")) == [
        f"{prefix}/export/model.jaxexport",
        f"{prefix}/export/model.json",
    ]
    assert not (ROOT / "gs:").exists(), "a path bypassed etils.epath"


def test_a_damaged_newest_checkpoint_in_a_bucket_falls_back(gcs, synthetic_full_dir, tmp_path):
    run = f"gs://bucket/{tmp_path.name}/run"
    assert _train(gcs, run, synthetic_full_dir, 2).returncode == 0
    bucket = _bucket(gcs)
    state = f"bucket/{tmp_path.name}/run/checkpoints/2/state"
    largest = max(bucket.find(state), key=lambda path: bucket.size(path))
    bucket.pipe_file(largest, bucket.cat_file(largest)[:100])  # Cut short.
    evaluated = run_cli("--mode=eval", f"--workdir={run}", env=gcs)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["epoch"] == 1  # Read-only: skipped.
    again = _train(gcs, run, synthetic_full_dir, 2)
    assert again.returncode == 0, again.stderr
    assert "resumed from the checkpoint of epoch 1" in again.stdout
    assert len(bucket.ls(f"bucket/{tmp_path.name}/run/checkpoints_unreadable")) == 1
    # The failed restore's stray reads print nothing (checkpointing._keep_stray_reads_off_stderr).
    assert "Traceback" not in evaluated.stderr + again.stderr


def test_kill_9_mid_save_in_a_bucket_then_the_rerun_reaches_the_uninterrupted_run(
    gcs, synthetic_full_dir, tmp_path
):
    features = config_overrides(**TUNED_FEATURES)
    reference = _train({}, tmp_path / "reference", synthetic_full_dir, 3, *features)
    assert reference.returncode == 0, reference.stderr
    run = f"gs://bucket/{tmp_path.name}/run"
    args = [*TINY, f"--config.data_dir={synthetic_full_dir}", "--config.num_epochs=3"]
    process = start_cli(*args, *features, f"--workdir={run}", env=gcs)
    bucket = _bucket(gcs)
    checkpoints = f"bucket/{tmp_path.name}/run/checkpoints"
    deadline = time.monotonic() + 120
    while not (bucket.exists(checkpoints) and bucket.ls(checkpoints, refresh=True)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.kill()  # SIGKILL: mid-save, its lock left behind in the bucket.
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert bucket.exists(f"bucket/{tmp_path.name}/run/.lock")  # Left for the rerun to take.
    rerun = run_cli(*args, *features, f"--workdir={run}", env=gcs)  # Takes the dead run's lock.
    assert rerun.returncode == 0, rerun.stderr
    assert _fingerprint(run_cli("--mode=eval", f"--workdir={run}", env=gcs)) == _fingerprint(
        run_cli("--mode=eval", f"--workdir={tmp_path / 'reference'}")
    )


def test_a_second_launch_on_a_busy_bucket_workdir_is_refused_within_seconds(
    gcs, synthetic_full_dir, tmp_path
):
    run = f"gs://bucket/{tmp_path.name}/run"
    args = [*TINY, f"--config.data_dir={synthetic_full_dir}", f"--workdir={run}"]
    first = start_cli(*args, "--config.num_epochs=1000", env=gcs)  # Stopped below.
    try:
        bucket = _bucket(gcs)
        log = f"bucket/{tmp_path.name}/run/metrics.jsonl"
        deadline = time.monotonic() + 120
        while not bucket.exists(log):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
            bucket.invalidate_cache()
        started = time.monotonic()
        second = run_cli(*args, "--config.num_epochs=1000", env=gcs)
        assert time.monotonic() - started < 30
        (line,) = _own_lines(second.stderr)
        assert second.returncode == 2 and f"is in use by process {first.pid}" in line, line
        assert "expires 180 s after its last refresh" in line
        assert first.poll() is None  # Undisturbed, until a user stops it.
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()  # A no-op once it has ended; else the test failed midway.
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM after epoch" in stderr
    assert not bucket.exists(f"bucket/{tmp_path.name}/run/.lock")  # Released as it stopped.


@pytest.mark.parametrize(
    "age, refused",
    # A refresh time no run writes (far ahead, or NaN) is a damaged lock, taken over: they
    # were tracebacks, and NaN a lock that never expired.
    [(10, True), (200, False), (-1e300, False), (math.nan, False)],
    ids=["10s", "200s", "refreshed_1e300", "refreshed_nan"],
)
def test_a_lock_left_by_a_run_on_another_host_expires(
    gcs, synthetic_full_dir, tmp_path, age, refused
):
    run = f"gs://bucket/{tmp_path.name}/run"
    # A holder of newlines cut the line short; one of a megabyte made it a megabyte (trial 9).
    holder = "process 7\non elsewhere " + "x" * 10**6
    held = {"holder": holder, "host": "elsewhere", "pid": 7, "token": "x"}
    held["refreshed"] = time.time() - age
    _bucket(gcs).pipe_file(f"bucket/{tmp_path.name}/run/.lock", json.dumps(held).encode())
    result = _train(gcs, run, synthetic_full_dir, 1)
    assert len(result.stderr) < 10_000
    if refused:
        (line,) = _own_lines(result.stderr)
        assert result.returncode == 2 and "is in use by process 7 on elsewhere xxx" in line, line
        assert "expires 180 s after its last refresh, at " in line
    else:
        assert result.returncode == 0, result.stderr
        assert "took over" in result.stderr and "not refreshed for" in result.stderr
        assert not _bucket(gcs).exists(f"bucket/{tmp_path.name}/run/.lock")  # Its own, released.


def test_an_exercise_writes_its_results_to_a_bucket(gcs, synthetic_full_dir, tmp_path):
    exercise = tmp_path / "tiny.py"
    exercise.write_text(
        "import ml_collections\nfrom mlp_jax.config import load_experiment\n\n\n"
        "def get_config():\n    config = ml_collections.ConfigDict()\n"
        "    config.name, config.question = 'tiny', 'does a bucket hold it?'\n"
        "    config.train = load_experiment('experiments/mlp_concise.py')\n"
        f"    config.train.data_dir = {str(synthetic_full_dir)!r}\n"
        "    config.train.validation_size = 1000\n"
        "    config.sweep = {'num_hiddens': [8, 16], 'seed': [0]}\n"
        "    config.quick_sweep, config.quick_num_epochs = config.sweep, 1\n"
        "    config.x, config.plot = 'num_hiddens', 'line'\n    return config\n"
    )
    where = f"gs://bucket/{tmp_path.name}"
    result = run_cli(
        f"--config={exercise}",
        "--quick",
        f"--results_dir={where}/results",
        f"--workdir={where}/work",
        env=gcs,
        module="experiments.studies.exercises.run",
    )
    assert result.returncode == 0, result.stderr
    bucket = _bucket(gcs)
    assert sorted(p.rsplit("/", 1)[1] for p in bucket.ls(f"bucket/{tmp_path.name}/results")) == [
        "tiny.json",
        "tiny.md",
        "tiny.png",
    ]
    assert len(bucket.glob(f"bucket/{tmp_path.name}/work/tiny/*.json")) == 2


@pytest.mark.parametrize(
    "module, args",
    [
        ("mlp_jax.main", [*TINY, "--workdir=gs://bucket/x"]),
        ("mlp_jax.main", ["--mode=eval", "--workdir=gs://bucket/x"]),
        ("mlp_jax.main", ["--mode=predict", "--workdir=gs://bucket/x", "a.png"]),
        ("mlp_jax.main", ["--mode=export", "--workdir=gs://bucket/x"]),
        (
            "experiments.studies.exercises.run",
            [
                "--config=experiments/studies/exercises/width.py",
                "--quick",
                "--results_dir=gs://bucket/results",
            ],
        ),
        (
            "experiments.studies.search.run",
            [
                "--config=experiments/studies/search/joint_search.py",
                "--quick",
                "--workdir=gs://b/w",
            ],
        ),
    ],
    ids=["train", "eval", "predict", "export", "exercise", "search"],
)
def test_a_bucket_path_without_gcsfs_is_one_line_naming_the_install(gcs, module, args):
    result = run_cli(*args, env={**gcs, "MLP_JAX_TEST_HIDE": "gcsfs"}, module=module)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = _own_lines(result.stderr)
    assert "gs:// paths need a package this environment lacks" in line, line
    assert "pip install -e '.[gcs]'" in line and "make adds the gcs extra" in line


@pytest.mark.parametrize("by", ["another run", "a deletion"])
def test_a_run_whose_lock_was_taken_over_stops_without_saving_more(
    gcs, synthetic_full_dir, tmp_path, by
):
    # Its heartbeat (every second here) finds another run's generation of the lock, or none
    # (deleted, said as "taken over by nobody ... not refreshed for over 180 s": trial 9).
    run = f"gs://bucket/{tmp_path.name}/run"
    args = [*TINY, f"--config.data_dir={synthetic_full_dir}", f"--workdir={run}"]
    env = {**gcs, "MLP_JAX_LOCK_HEARTBEAT": "1"}
    process = start_cli(*args, "--config.num_epochs=40", env=env)
    bucket, lock = _bucket(gcs), f"bucket/{tmp_path.name}/run/.lock"
    deadline = time.monotonic() + 120
    while not bucket.exists(f"bucket/{tmp_path.name}/run/metrics.jsonl"):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
        bucket.invalidate_cache()
    if by == "a deletion":
        bucket.rm(lock)
    else:  # As a run elsewhere taking it over.
        other = {"holder": "process 9 on elsewhere", "token": "y", "refreshed": time.time()}
        bucket.pipe_file(lock, json.dumps(other).encode())
    _, stderr = process.communicate(timeout=120)
    (line,) = _own_lines(stderr)
    assert process.returncode == 2, stderr
    if by == "a deletion":
        assert "this run's lock was deleted while it ran" in line, line
        assert not bucket.exists(lock)
    else:
        assert "this run's lock was taken over by process 9 on elsewhere" in line, line
        assert json.loads(bucket.cat_file(lock))["token"] == "y"  # Not deleted by the loser.
    epochs = len(bucket.cat_file(f"bucket/{tmp_path.name}/run/metrics.jsonl").splitlines())
    assert epochs < 40


_ACQUIRE_ITS_OWN = """
import json, sys, time
import fsspec
from etils import epath
from mlp_jax import locks
lock = locks._BucketLock(epath.Path(sys.argv[1]))
lock.record["token"] = "mine"
fsspec.filesystem("gs").pipe_file(sys.argv[1][5:], json.dumps(
    {"holder": "this very process", "token": "mine", "refreshed": time.time()}).encode())
lock.acquire()  # Its own create, answered 412 on a retry: acquired, not refused.
lock.release()
print(fsspec.filesystem("gs").exists(sys.argv[1][5:]))
"""


def test_a_lock_holding_this_runs_own_record_is_acquired_not_refused(gcs, tmp_path):
    result = _python(gcs, _ACQUIRE_ITS_OWN, f"gs://bucket/{tmp_path.name}/.lock", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


_RACE = """
import sys, threading
from etils import epath
from mlp_jax import files

folder = epath.Path(sys.argv[1])
done = threading.Event()

def fill_and_empty():  # Another host preparing the workdir: a probe written, then deleted.
    probe = folder / "probe"
    while not done.is_set():
        probe.write_text("")
        probe.unlink()

threading.Thread(target=fill_and_empty, daemon=True).start()
seen = {files.kind(folder) for _ in range(150)}
done.set()
print(sorted(map(str, seen)))
"""


def test_a_workdir_another_host_is_filling_is_never_taken_for_a_file(gcs, tmp_path):
    # On every host of a pod, prepare_folder asks what the bucket workdir is while host 0
    # writes its first objects there: a folder, or nothing yet, never a file.
    folder = f"gs://bucket/{tmp_path.name}/pod"
    result = _python(gcs, _RACE, folder, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "a file" not in result.stdout and "a folder" in result.stdout, result.stdout


# The training command, run where every recursive deletion of checkpoint 1 in the bucket
# stops midway: it deletes the files of its second half (the arrays' data, its commit marker
# spared), then fails, as an object store's permission or a dropped connection would.
_TRAIN_WHERE_CHECKPOINT_1_RESISTS = """
import runpy, sys
from fsspec.asyn import sync_wrapper
from gcsfs.core import GCSFileSystem

rm = GCSFileSystem._rm

async def rm_stopping_midway(self, path, recursive=False, **kwargs):
    if recursive and str(path).rstrip("/").endswith("/checkpoints/1"):
        found = sorted(await self._find(path))
        await rm(self, found[len(found) // 2 :])
        raise PermissionError(13, "Permission denied (test)", found[0])
    return await rm(self, path, recursive=recursive, **kwargs)

GCSFileSystem._rm, GCSFileSystem.rm = rm_stopping_midway, sync_wrapper(rm_stopping_midway)
sys.argv[0] = "mlp_jax.main"
runpy.run_module("mlp_jax.main", run_name="__main__")
"""


_CHECKPOINTS_LISTED = """
import sys
from mlp_jax import checkpointing
print(checkpointing.CheckpointStore(sys.argv[1], keep=1, read_only=True).saved_epochs())
"""


def test_an_old_checkpoint_partly_deleted_in_a_bucket_is_never_listed(
    gcs, synthetic_full_dir, tmp_path
):
    """Rotation whose deletion of a bucket checkpoint stops midway: one warning naming it,
    the run goes on, and Orbax never sees the half-deleted checkpoint (no metadata warnings,
    no restore of it); the next start deletes what is left, and nothing else (a folder of
    the user's under checkpoints/ stays)."""
    run = f"gs://bucket/{tmp_path.name}/run"
    args = [*TINY, f"--config.data_dir={synthetic_full_dir}", f"--workdir={run}"]
    keep_one = "--config.keep_checkpoints=1"
    result = _python(
        gcs, _TRAIN_WHERE_CHECKPOINT_1_RESISTS, *args, keep_one, "--config.num_epochs=2"
    )
    assert result.returncode == 0, result.stderr
    # The warning, absl's (its prefix that of TensorStore's lines too), and nothing else.
    (line,) = [line for line in result.stderr.splitlines() if "checkpointing.py" in line]
    assert not _own_lines(result.stderr), result.stderr
    assert f"{run}/checkpoints/1 (checkpoint 1, older than the newest 1" in line, line
    assert "Permission denied (test)" in line and "delete it yourself" in line, line
    bucket, checkpoints = _bucket(gcs), f"bucket/{tmp_path.name}/run/checkpoints"
    assert bucket.exists(f"{checkpoints}/1")  # Half of it, out of Orbax's sight.
    listed = _python(gcs, _CHECKPOINTS_LISTED, run, timeout=120)
    assert listed.stdout.strip() == "[2]", listed.stderr  # As every command lists them.
    bucket.pipe_file(f"{checkpoints}/7/notes.txt", b"the user's")  # No checkpoint either.
    rerun = run_cli(*args, keep_one, "--config.num_epochs=3", env=gcs)
    assert rerun.returncode == 0 and not _own_lines(rerun.stderr), rerun.stderr
    # Checkpoint 2, as old now, is Orbax's: kept, and resumed from.
    assert f"resumed from the checkpoint of epoch 2 in {run}" in rerun.stdout, rerun.stdout
    bucket.invalidate_cache()
    assert [p.rsplit("/", 1)[1] for p in bucket.ls(checkpoints, refresh=True)] == ["3", "7"]


# A command run where the bucket refuses this machine's account, as GCS does (HTTP 403 and
# its JSON error), every request of the kind $REFUSE names ("writes" or "reads").
_AS_AN_ACCOUNT_REFUSED = """
import os, runpy, sys
from gcsfs.core import GCSFileSystem
from gcsfs.retry import validate_response

request = GCSFileSystem._request
refused = ("GET",) if os.environ["REFUSE"] == "reads" else ("POST", "PUT", "PATCH", "DELETE")
body = b'{"error": {"code": 403, "message": "vm@p.iam.gserviceaccount.com does not have '
body += b'storage.objects.x access to the Google Cloud Storage object."}}'

async def as_refused(self, method, path, *args, **kwargs):
    if method.upper() in refused:
        validate_response(403, body, path, args)
    return await request(self, method, path, *args, **kwargs)

GCSFileSystem._request = as_refused
sys.argv[0] = "mlp_jax.main"
runpy.run_module("mlp_jax.main", run_name="__main__")
"""


@pytest.mark.parametrize("refused", ["writes", "reads", "data"])
def test_a_bucket_that_refuses_the_account_is_one_line_naming_it(
    gcs, synthetic_full_dir, tmp_path, refused
):
    run, flag = f"gs://bucket/{tmp_path.name}/run", "--workdir"
    if refused == "writes":
        args = [*TINY, f"--config.data_dir={synthetic_full_dir}", f"--workdir={run}"]
    elif refused == "reads":
        trained = _train(gcs, run, synthetic_full_dir, 1)
        assert trained.returncode == 0, trained.stderr
        args = ["--mode=eval", f"--workdir={run}"]
    else:  # The data in the bucket, the workdir on this disk.
        run, flag = f"gs://bucket/{tmp_path.name}/data", "--config.data_dir"
        _bucket(gcs).put(f"{synthetic_full_dir}/", f"bucket/{tmp_path.name}/data/", recursive=True)
        args = [*TINY, f"--config.data_dir={run}", f"--workdir={tmp_path / 'run'}"]
        refused = "reads"
    result = _python({**gcs, "REFUSE": refused}, _AS_AN_ACCOUNT_REFUSED, *args)
    (line,) = _own_lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    # The object (not the API's b/bucket/o path), the account and the permission, the fix.
    named = f"{run}: " if refused == "writes" else run  # (Eval reads the workdir's kind first.)
    if flag == "--config.data_dir":
        named = f"{run}/"  # (An IDX file.)
    assert f"{named}" in line and ": Forbidden: vm@p.iam.gserviceaccount.com does not" in line
    assert "b/bucket" not in line, line
    assert line.endswith(f"give that account this access to the bucket, or use another {flag}")


# A command whose clients retry as they do, but without their pauses (gcsfs's come to about
# half a minute, TensorStore's to a quarter of an hour): the bound under test is on each
# request's silence, not on the retries.
_WITHOUT_RETRY_PAUSES = """
import asyncio, runpy, sys
from gcsfs import retry
from orbax.checkpoint._src.serialization import tensorstore_utils

retry.asyncio = type(sys)("asyncio")
retry.asyncio.sleep = lambda seconds: asyncio.sleep(0)
for context in (tensorstore_utils._BASE_TS_CONTEXT, tensorstore_utils._DEFAULT_OCDBT_TS_CONTEXT):
    context["gcs_request_retries"] = {"max_retries": 3, "initial_delay": "0s"}
sys.argv[0] = "mlp_jax.main"
runpy.run_module("mlp_jax.main", run_name="__main__")
"""


@pytest.mark.parametrize("silent", ["gcsfs", "tensorstore"])
def test_a_bucket_gone_silent_ends_the_command_in_one_line(
    gcs, synthetic_full_dir, tmp_path, silent
):
    # A server that takes connections and never answers (a frozen one, a route dropped
    # mid-answer): an eval waited on it for ever.
    run = f"gs://bucket/{tmp_path.name}/run"
    assert _train(gcs, run, synthetic_full_dir, 1).returncode == 0
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        # gcsfs reads the run's files; TensorStore, through Orbax, its arrays.
        client = "STORAGE_EMULATOR_HOST" if silent == "gcsfs" else "TENSORSTORE_GCS_HTTP_URL"
        # (Not shorter: it bounds the emulator's answers too, on a loaded machine.)
        env = {**gcs, client: url, "MLP_JAX_BUCKET_TIMEOUT": "2"}
        result = _python(env, _WITHOUT_RETRY_PAUSES, "--mode=eval", f"--workdir={run}", timeout=60)
    (line,) = _own_lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    if silent == "gcsfs":
        assert line.startswith(f"error: {run}: no answer from Cloud Storage through every retry")
        assert "(each request waits 2 s for a byte; $MLP_JAX_BUCKET_TIMEOUT sets it)" in line
    else:
        assert line.startswith("error: no connection to Cloud Storage through every retry (")
        assert "Less than 1 bytes/sec transferred the last 2 seconds" in line
    assert line.endswith(
        "check the network, then rerun the same command to go on: what was saved is kept"
    )


def test_a_compilation_cache_in_a_silent_bucket_is_passed_over_in_seconds(
    gcs, synthetic_full_dir, tmp_path
):
    # Each program's compilation read and wrote it: minutes of retries each, an hour a run.
    with socket.create_server(("127.0.0.1", 0)) as server:
        env = {
            **gcs,
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.getsockname()[1]}",
            "MLP_JAX_COMPILATION_CACHE": "gs://bucket/cache",
            "MLP_JAX_BUCKET_TIMEOUT": "2",
        }
        started = time.monotonic()
        result = run_cli(
            *TINY,
            f"--config.data_dir={synthetic_full_dir}",
            f"--workdir={tmp_path}",
            env=env,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    assert "the compilation cache gs://bucket/cache did not answer within 2 s" in result.stderr
