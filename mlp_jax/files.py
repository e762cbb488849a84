"""Paths a user gives (workdir, data_dir, results), local or remote (gs://, s3://, ...).

Every file the library writes or reads goes through `etils.epath`, as Orbax's own files do,
so `--workdir=gs://bucket/run` works on a TPU VM. Object stores cannot append or rename in
place, so files are written whole: to a temporary name, then moved over the old one, which
on a local disk is atomic and on an object store leaves either the old or the new object.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from etils import epath

from mlp_jax.errors import UserError, os_error_line


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URI stays as it is, a local path becomes absolute."""
    path = epath.Path(path)
    if is_remote(path):
        return path
    return path.expanduser().absolute()


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI of a remote file system (gs://, s3://, ...)."""
    return "://" in os.fspath(path)


# The folder that holds the mlp_jax package: a clone's root where it is installed from one.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def find_file(path: str | os.PathLike) -> Path:
    """The local file `path` names: an absolute path as it is; a relative one in the current
    folder, or failing that the nearest folder above it that holds it, or failing that the
    folder mlp_jax is installed from (a clone's root). So the paths a config gives for its
    model and base experiments ("experiments/mlp_scratch.py") work from the repository's
    root, from any folder inside it (a notebook's), and from elsewhere with a clone's install.

    Raises:
      UserError: no such file, naming where it was looked for.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        here = Path.cwd()
        candidates = [folder / path for folder in (here, *here.parents, _PACKAGE_PARENT)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = (
        "" if path.is_absolute() else f" in {Path.cwd()}, any folder above it or {_PACKAGE_PARENT}"
    )
    raise UserError(
        f"{path}: no such file{where}; run from the repository (or a folder inside it) or "
        "give an absolute path"
    )


def write_atomically(path: epath.Path, content: str | bytes) -> None:
    """Replaces the file at `path` with `content`; a reader sees the old file or the new one."""
    tmp = path.parent / f".{path.name}.tmp"
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)


def write_record(path: epath.Path, record) -> None:
    """Writes `record` as JSON, atomically: a kill mid-write leaves the last record whole,
    which matters for the records a rerun resumes from (a search's, an ablation's)."""
    write_atomically(path, json.dumps(record, indent=1) + "\n")


def read_record(path: epath.Path):
    """The JSON record at `path`, or None where there is none.

    Raises:
      UserError: the file is not valid JSON (edited by hand, or written by a version that
        did not write atomically).
    """
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}: not valid JSON ({e}); restore it (git checkout -- {path.name} in its "
            "folder) or delete it to measure again"
        ) from None


def prepare_folder(
    folder: epath.Path,
    what: str = "--workdir",
    folders: tuple[str, ...] = (),
    regular_files: tuple[str, ...] = (),
) -> None:
    """Makes sure a command can write into `folder` before it starts its work: a folder (made
    if missing) that this process can write a file into, in which each of `folders` is a
    folder and each of `regular_files` a file where they exist.

    Args:
      folder: the folder (local or remote).
      what: how the user named it, for the message (e.g. "--workdir").
      folders, regular_files: names inside it that must be of that kind.

    Raises:
      UserError: naming the path, what is wrong and the fix.
    """
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what}={folder} is a file, not a folder; move it away or use another")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what}={folder} cannot be written: {os_error_line(e) or e}") from None
    for name in folders:
        if (folder / name).exists() and not (folder / name).is_dir():
            raise UserError(
                f"{folder / name} is a file where the run keeps a folder; move it away or use "
                f"another {what}"
            )
    for name in regular_files:
        if (folder / name).is_dir():
            raise UserError(
                f"{folder / name} is a folder where the run keeps a file; move it away or use "
                f"another {what}"
            )


LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: epath.Path):
    """Holds WORKDIR/.lock so that a second run on the same workdir is refused at once.

    An OS lock (flock) is taken, not a marker file, so a killed run leaves nothing that blocks
    the next one. The file records who holds it, for the error. A remote workdir (gs://...)
    has no such lock: one run per remote workdir is the user's to keep.

    Raises:
      UserError: another process holds the lock.
    """
    if is_remote(workdir):
        yield
        return
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
        lock.write(f"process {os.getpid()} on {socket.gethostname()} (started {time.ctime()})")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
