"""The workdir lock's local side and its settings. (Two runs on one workdir, and the lock in a
bucket: tests/integration/checkpointing_cli_test.py and gcs_test.py.)"""

import errno
import fcntl
import json
import os
import time

import fsspec
import pytest

from mlp_jax import files, locks
from mlp_jax.errors import UserError


@pytest.mark.parametrize(
    "link, refused",
    [
        (os.symlink, r"run/\.lock: a link or a pipe where this command writes its lock"),
        (os.link, r"run/\.lock: a link or a pipe where this command writes its lock"),
    ],
    ids=["symbolic", "hard"],
)
def test_a_link_where_the_lock_goes_is_refused_and_its_file_kept(tmp_path, link, refused):
    # The lock file is rewritten with its holder: through a link (another name of a user's
    # file, for a hard one), a user's file was.
    users = tmp_path / "notes.txt"
    users.write_text("the user's notes\n")
    workdir = tmp_path / "run"
    workdir.mkdir()
    link(users, workdir / ".lock")
    with pytest.raises(UserError, match=refused), locks.workdir_lock(files.as_path(workdir)):
        pass
    assert users.read_text() == "the user's notes\n" and os.path.lexists(workdir / ".lock")
    assert os.path.islink(workdir / ".lock") == (link is os.symlink)


def test_a_lock_is_held_and_names_its_holder(tmp_path):
    busy = rf"{tmp_path} is in use by process {os.getpid()}"
    with (
        locks.workdir_lock(files.as_path(tmp_path)),
        pytest.raises(UserError, match=busy),
        locks.workdir_lock(files.as_path(tmp_path)),
    ):
        pass
    with locks.workdir_lock(files.as_path(tmp_path)):  # Released.
        pass


def test_a_workdir_moved_or_removed_while_held_is_lost(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with locks.workdir_lock(files.as_path(workdir)) as lock:
        assert lock.lost() is None
        workdir.rename(tmp_path / "moved")
        workdir.mkdir()  # As a run's next save made it.
        assert "run: moved or removed while this run wrote it" in lock.lost()
        workdir.rmdir()
        assert "run: moved or removed" in lock.lost()


def test_a_lock_file_removed_while_held_is_lost(tmp_path):
    # A second run then started beside the first, and ended in Orbax's traceback.
    with locks.workdir_lock(files.as_path(tmp_path)) as lock:
        (tmp_path / ".lock").unlink()
        assert "run may have started on this workdir" in lock.lost()
        with locks.workdir_lock(files.as_path(tmp_path)):  # The second run's.
            assert "removed or replaced while this run held it" in lock.lost()


def test_a_file_system_without_locks_runs_unlocked_and_says_so(tmp_path, monkeypatch, caplog):
    # NFS without its lock daemon answers flock with ENOLCK: refusing would refuse every run.
    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with locks.workdir_lock(files.as_path(tmp_path)):
        assert f"process {os.getpid()}" in (tmp_path / ".lock").read_text()
    assert "takes no locks (No locks available)" in caplog.text


@pytest.mark.parametrize("pid", [10**30, 0, -1, True, "7"], ids=str)
def test_a_bucket_lock_naming_a_process_no_kernel_numbers_was_written_by_no_run(pid):
    # 10**30 was an OverflowError traceback; 0 and -1 would name this process's group, or
    # every process, alive to os.kill: a lock never taken over.
    lock = object.__new__(locks._BucketLock)
    lock.fs, lock.bucket, lock.key, lock.stale = fsspec.filesystem("memory"), "bucket", "r", 180.0
    record = {"holder": "x", "namespace": locks._namespace(), "pid": pid, "refreshed": time.time()}
    lock.fs.pipe("bucket/r", json.dumps(record).encode())
    held, _ = lock._read()
    assert held["holder"] == "an unreadable lock" and locks._stale_reason(held, 180.0)


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"MLP_JAX_LOCK_HEARTBEAT": "abc"}, "MLP_JAX_LOCK_HEARTBEAT='abc' is not a number > 0"),
        ({"MLP_JAX_LOCK_STALE": "nan"}, "MLP_JAX_LOCK_STALE='nan' is not a number > 0"),
        ({"MLP_JAX_LOCK_STALE": "-1"}, "MLP_JAX_LOCK_STALE='-1' is not a number > 0"),
        ({"MLP_JAX_LOCK_HEARTBEAT": "0"}, "MLP_JAX_LOCK_HEARTBEAT='0' is not a number > 0"),
        ({"MLP_JAX_LOCK_HEARTBEAT": "200"}, "HEARTBEAT=200 is not shorter than .*STALE=180"),
    ],
)
def test_the_locks_times_from_the_environment_are_checked(tmp_path, monkeypatch, settings, problem):
    # Each was a traceback at import, a live run's lock taken over, or a heartbeat at full
    # speed slowing the epochs.
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=problem), locks.workdir_lock(files.as_path(tmp_path)):
        pass
    assert not (tmp_path / ".lock").exists()
