"""One run per workdir: a second launch on a busy workdir is refused within seconds, on a
local disk and in a bucket.

- A local workdir: an OS lock (flock) on WORKDIR/.lock, which the kernel releases when its
  process dies however it dies, so nothing left behind blocks the next run.
- A workdir in a Cloud Storage bucket (gs://): the object WORKDIR/.lock, created only if
  absent (a generation precondition, `ifGenerationMatch=0`: of two launches, exactly one
  creates it). An object outlives a killed process, so the run that holds it rewrites it
  every heartbeat (30 s), each rewrite conditional on the generation it wrote last; a later
  run takes it over when it is stale: its holder ran in this process namespace of this host
  and is gone, or it was last refreshed more than 180 s ago (a holder elsewhere that
  died). Taking over deletes that generation only, so of two runs taking over one stale lock,
  one wins; and a holder whose rewrite finds another generation has lost the lock, and stops
  (`Lock.lost`, read between programs) before it saves again.
- Other object stores (s3://, ...): no lock; one run per workdir is the user's to keep.

Either way the lock records who holds it, for the refusal's one line.
"""

import contextlib
import fcntl
import json
import math
import os
import socket
import threading
import time

from absl import logging
from etils import epath

from mlp_jax import files
from mlp_jax.errors import UserError, environment_number

LOCK_FILE = ".lock"


def _times() -> tuple[float, float]:
    """How often a run rewrites its lock in a bucket, and how long after its last rewrite a
    run elsewhere may take the lock over (a holder in this namespace that is gone releases it
    at once), in seconds: $MLP_JAX_LOCK_HEARTBEAT (30) and $MLP_JAX_LOCK_STALE (180); a slow
    network may want both longer, the tests shorter.

    Raises:
      UserError: either is not a number > 0, or a heartbeat is not shorter than a stale
        lock's age (other runs would take a live run's lock).
    """
    heartbeat = environment_number("MLP_JAX_LOCK_HEARTBEAT", 30.0)
    stale = environment_number("MLP_JAX_LOCK_STALE", 180.0)
    if heartbeat >= stale:
        raise UserError(
            f"MLP_JAX_LOCK_HEARTBEAT={heartbeat:g} is not shorter than MLP_JAX_LOCK_STALE="
            f"{stale:g}: other runs would take a live run's workdir; lower the first"
        )
    return heartbeat, stale


class Lock:
    """A held workdir lock, which a run asks between programs whether it still holds."""

    def lost(self) -> str | None:
        """The one line of a run that no longer holds its workdir, or None while it does."""
        return None


class _FolderLock(Lock):
    """A local workdir's lock, lost when the workdir's name no longer names the folder it
    locked (moved or removed while the run writes it: its next save made a new folder of
    that name, holding the rest of the run without its config.json, which every later
    command then refused), or WORKDIR/.lock no longer names the file it holds (removed: a
    second run started beside it)."""

    def __init__(self, workdir: epath.Path, held: tuple[int, int]):
        self.workdir = workdir
        self.identity = files.identity(workdir)
        self.held = held

    def lost(self) -> str | None:
        if files.identity(self.workdir) != self.identity:
            return (
                f"{self.workdir}: moved or removed while this run wrote it; stopped without "
                "saving more (what it saved went with the folder: rerun on it where it is "
                "now to resume)"
            )
        if files.identity(self.workdir / LOCK_FILE) != self.held:
            return (
                f"{self.workdir / LOCK_FILE}: removed or replaced while this run held it, so "
                "another run may have started on this workdir; stopped without saving more; "
                "check which run should own it, then rerun"
            )
        return None


@contextlib.contextmanager
def workdir_lock(workdir: epath.Path):
    """Holds WORKDIR/.lock for the duration, so that a second run on the workdir is refused.

    Yields:
      The `Lock`.

    Raises:
      UserError: another live run holds it, naming who and, in a bucket, when it expires;
        or the lock's times in the environment are not valid (checked wherever the workdir).
    """
    _times()
    if not files.is_remote(workdir):
        with _local_lock(workdir) as held:
            yield _FolderLock(workdir, held)
        return
    if not os.fspath(workdir).startswith("gs://"):
        yield Lock()
        return
    lock = _BucketLock(workdir / LOCK_FILE)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def _holder() -> str:
    return f"process {os.getpid()} on {socket.gethostname()} (started {time.ctime()})"


@contextlib.contextmanager
def _local_lock(workdir: epath.Path):
    path = workdir / LOCK_FILE
    # Never through a link: the lock is rewritten, and a user's file there would be.
    descriptor, _ = files.open_one_name(path, "its lock", access=os.O_RDWR)
    with open(descriptor, "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(
                f"{workdir} is in use by {holder}; wait for that run to end, stop it, or use "
                "another --workdir"
            ) from None
        except OSError as e:
            if e.errno not in files.NO_LOCKS:
                raise
            # Lustre's default, NFS without its lock daemon: refusing would refuse every run.
            logging.warning(
                "%s: this file system takes no locks (%s): a second run on this workdir "
                "would not be refused",
                path,
                os.strerror(e.errno),
            )
        lock.seek(0)
        lock.truncate()
        lock.write(_holder())
        lock.flush()
        held = os.fstat(lock.fileno())
        try:
            yield held.st_dev, held.st_ino
        finally:
            with contextlib.suppress(OSError):  # Nothing to release where none was taken.
                fcntl.flock(lock, fcntl.LOCK_UN)


def _namespace() -> str:
    """This machine's boot and this process's PID namespace: where a pid names a process."""
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as boot:
        return f"{boot.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    return socket.gethostname()


class _BucketLock(Lock):
    """WORKDIR/.lock in a bucket, through gcsfs (fsspec's GCS file system)."""

    def __init__(self, path: epath.Path):
        import fsspec  # noqa: PLC0415  (only buckets need it)

        self.path = path
        self.heartbeat, self.stale = _times()
        self.fs, key = fsspec.core.url_to_fs(os.fspath(path))
        self.bucket, self.key, _ = self.fs.split_path(key)
        self.record = {
            "holder": _holder(),
            "namespace": _namespace(),
            "pid": os.getpid(),
            "token": os.urandom(8).hex(),
        }
        self._generation = None  # Of our last write.
        self._lost = None
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="lock heartbeat", daemon=True)

    def _write(self, if_generation: str) -> str:
        """Writes our record if the lock's generation is `if_generation` ("0": absent);
        returns the new generation.

        Raises:
          FileExistsError: the lock is of another generation (GCS's 412).
        """
        written = self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{{}}/o",  # noqa: SLF001
            self.bucket,
            uploadType="media",
            name=self.key,
            ifGenerationMatch=if_generation,
            data=json.dumps({**self.record, "refreshed": time.time()}).encode(),
            headers={"Content-Type": "application/octet-stream"},
            json_out=True,
        )
        self.fs.invalidate_cache()
        return str(written["generation"])

    def acquire(self) -> None:
        for _ in range(3):  # Created, or a stale lock taken over, or another run is faster.
            try:
                self._generation = self._write("0")
            except FileExistsError:
                held, generation = self._read()
                if held is None:
                    continue  # Released meanwhile.
                if held.get("token") == self.record["token"]:  # Our create, retried.
                    self._generation = generation
                else:
                    reason = _stale_reason(held, self.stale)
                    if reason is None:
                        raise UserError(_busy_line(self.path, held, self.stale)) from None
                    holder = held.get("holder", "a run")
                    logging.warning("took over %s from %s: %s", self.path, holder, reason)
                    self._delete(generation)
                    continue
            self._heartbeat.start()
            return
        raise UserError(f"{self.path}: other runs keep taking this workdir; use another --workdir")

    def _read(self) -> tuple[dict | None, str | None]:
        """The lock's record (a stale one when it is not a record) and its generation, or
        (None, None) when it is gone."""
        try:
            info = self.fs.info(f"{self.bucket}/{self.key}", refresh=True)
            content = self.fs.cat_file(f"{self.bucket}/{self.key}")
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(content)
            refreshed = float(record.get("refreshed"))
            pid = record.get("pid", 1)
        except (ValueError, TypeError, AttributeError):
            refreshed, pid = math.nan, 1
        # Refreshed at no time, or later than a clock's skew explains, or by a process no
        # kernel numbers (0 and -1 would name this process's group, or every process): written
        # by no run.
        if not (
            math.isfinite(refreshed)
            and refreshed < time.time() + self.stale
            and type(pid) is int
            and 0 < pid < 2**31
        ):
            record = {"holder": "an unreadable lock", "refreshed": 0.0}
        # Shown in a line: a holder of newlines cut it short, one of 2 MB made it 2 MB.
        holder = " ".join(str(record.get("holder", "another run")).split())
        record["holder"] = holder if len(holder) <= 200 else f"{holder[:200]}..."
        return record, str(info.get("generation"))

    def _delete(self, generation: str | None) -> None:
        """Deletes the lock if it is still that generation (another run may have taken it)."""
        with contextlib.suppress(FileNotFoundError, FileExistsError):
            self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=generation)
        self.fs.invalidate_cache()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._generation = self._write(self._generation)
            except FileExistsError:  # Another run took it over: this one no longer holds it.
                held, _ = self._read()
                self._lost = held["holder"] if held else _DELETED
                return
            except Exception:  # noqa: BLE001  (a missed beat; the next one may pass)
                continue

    def lost(self) -> str | None:
        if self._lost is None:
            return None
        if self._lost == _DELETED:  # Not "taken over ... not refreshed for over 180 s".
            return (
                f"{self.path}: this run's lock was deleted while it ran (by hand, or with the "
                "workdir); stopped without saving more; see what is left in the workdir (one "
                "without its config.json cannot be resumed: train afresh in another --workdir)"
            )
        return (
            f"{self.path}: this run's lock was taken over by {self._lost} (it was not "
            f"refreshed for over {self.stale:.0f} s); stopped without saving more; check which "
            "run should own this workdir"
        )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join()  # No beat may write the lock again once it is deleted.
        if self._lost is None:
            self._delete(self._generation)


# What a bucket lock found in its place when its beat could not rewrite it.
_DELETED = "nobody (deleted)"


def _stale_reason(held: dict, stale_seconds: float) -> str | None:
    """Why a lock's holder is gone (its process ended, where its pid can be checked, or it
    stopped refreshing the lock), or None while it may be running."""
    if held.get("namespace") == _namespace() and isinstance(held.get("pid"), int):
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return "its process has ended"
        except PermissionError:
            pass  # Alive, another user's.
    age = time.time() - float(held.get("refreshed", 0.0))
    return f"not refreshed for {age:.0f} s" if age > stale_seconds else None


def _busy_line(path: epath.Path, held: dict, stale_seconds: float) -> str:
    age = time.time() - float(held.get("refreshed", 0.0))
    expires = time.strftime("%H:%M:%S", time.localtime(time.time() + stale_seconds - age))
    when = f"{age:.0f} s ago" if age >= 0 else f"{-age:.0f} s ahead of this host's clock"
    return (
        f"{path.parent} is in use by {held.get('holder', 'another run')} (its lock {path} was "
        f"refreshed {when}); wait for that run to end, stop it, or use another "
        f"--workdir (a lock whose run died expires {stale_seconds:.0f} s after its last "
        f"refresh, at {expires})"
    )
