"""One run per workdir: a second launch on a busy workdir is refused within seconds, on a
local disk and in a bucket.

- A local workdir: an OS lock (flock) on WORKDIR/.lock, which the kernel releases when its
  process dies however it dies, so nothing left behind blocks the next run.
- A workdir in an object store (gs://): the object WORKDIR/.lock, created only if absent
  (a generation precondition, `ifGenerationMatch=0`: of two launches, exactly one creates
  it). An object outlives a killed process, so the run that holds it rewrites it every
  HEARTBEAT_SECONDS, and a later run takes it over when it is stale: its holder ran on this
  host and is gone, or it was last refreshed more than STALE_SECONDS ago (a holder on
  another host that died). Taking over deletes that generation only, so of two runs taking
  over one stale lock, one wins.

Either way the lock records who holds it, for the refusal's one line.
"""

import contextlib
import fcntl
import json
import os
import socket
import threading
import time

from etils import epath

from mlp_jax import files
from mlp_jax.errors import UserError

LOCK_FILE = ".lock"
# How often a run rewrites its lock in a bucket, and how long after its last rewrite another
# host may take the lock over (a holder on this host that is gone releases it at once).
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 180.0


@contextlib.contextmanager
def workdir_lock(workdir: epath.Path):
    """Holds WORKDIR/.lock for the duration, so that a second run on the workdir is refused.

    Raises:
      UserError: another live run holds it, naming who and, in a bucket, when it expires.
    """
    lock = _ObjectLock(workdir / LOCK_FILE) if files.is_remote(workdir) else None
    if lock is None:
        with _local_lock(workdir):
            yield
        return
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _holder() -> str:
    return f"process {os.getpid()} on {socket.gethostname()} (started {time.ctime()})"


@contextlib.contextmanager
def _local_lock(workdir: epath.Path):
    path = os.path.join(os.fspath(workdir), LOCK_FILE)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(
                f"{workdir} is in use by {holder}; wait for that run to end, stop it, or use "
                "another --workdir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(_holder())
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _ObjectLock:
    """WORKDIR/.lock in a bucket, through fsspec's GCS file system (gcsfs)."""

    def __init__(self, path: epath.Path):
        import fsspec  # noqa: PLC0415  (only object stores need it)

        self.path = path
        self.fs, self.key = fsspec.core.url_to_fs(os.fspath(path))
        self.record = {
            "holder": _holder(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": os.urandom(8).hex(),
        }
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="lock heartbeat", daemon=True)

    def _payload(self) -> bytes:
        return json.dumps({**self.record, "refreshed": time.time()}).encode()

    def acquire(self) -> None:
        for _ in range(3):  # Created, or a stale lock taken over, or another run is faster.
            try:
                self.fs.pipe_file(self.key, self._payload(), mode="create")
            except FileExistsError:
                held, generation = self._read()
                if held is None:
                    continue  # Released meanwhile.
                reason = _stale_reason(held)
                if reason is None:
                    raise UserError(_busy_line(self.path, held)) from None
                self._delete(generation)
                continue
            self._heartbeat.start()
            return
        raise UserError(
            f"{self.path}: another run took this workdir meanwhile; use another --workdir"
        )

    def _read(self) -> tuple[dict | None, str | None]:
        """The lock's record and its generation, or (None, None) when it is gone."""
        try:
            info = self.fs.info(self.key)
            content = self.fs.cat_file(self.key)
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(content)
        except ValueError:
            record = {"holder": "an unknown run", "refreshed": 0.0}
        return record, info.get("generation")

    def _delete(self, generation: str | None) -> None:
        """Deletes the lock if it is still that generation (another run may have taken it)."""
        bucket, key, _ = self.fs.split_path(self.key)
        with contextlib.suppress(FileNotFoundError, FileExistsError):
            self.fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation)
        self.fs.invalidate_cache()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # A missed beat; the next one may pass.
                self.fs.pipe_file(self.key, self._payload())

    def release(self) -> None:
        self._stop.set()
        held, generation = self._read()
        if held is not None and held.get("token") == self.record["token"]:
            self._delete(generation)


def _stale_reason(held: dict) -> str | None:
    """Why a lock's holder is gone (its process ended on this host, or it stopped refreshing
    the lock), or None while it may be running."""
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return "its process has ended"
        except PermissionError:
            pass  # Alive, another user's.
    age = time.time() - float(held.get("refreshed", 0.0))
    return f"not refreshed for {age:.0f} s" if age > STALE_SECONDS else None


def _busy_line(path: epath.Path, held: dict) -> str:
    age = time.time() - float(held.get("refreshed", 0.0))
    expires = time.strftime("%H:%M:%S", time.localtime(time.time() + STALE_SECONDS - age))
    return (
        f"{path.parent} is in use by {held.get('holder', 'another run')} (its lock {path} was "
        f"refreshed {age:.0f} s ago); wait for that run to end, stop it, or use another "
        f"--workdir (a lock whose run died expires {STALE_SECONDS:.0f} s after its last "
        f"refresh, at {expires})"
    )
