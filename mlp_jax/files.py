"""Paths a user gives (workdir, data_dir, results), local or remote (gs://, s3://, ...).

Every file the library writes or reads goes through `etils.epath`, as Orbax's own files do,
so `--workdir=gs://bucket/run` works on a TPU VM. Files are written whole: on a local disk to
a temporary name, then renamed over the old one (atomic); on an object store in place, since
an object is written whole or not at all and a rename there is a copy. No path is opened
before it is known to be of the kind expected (a pipe would block the run).
"""

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import resource
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

from etils import epath

from mlp_jax.errors import (
    UserError,
    bucket_timeout_seconds,
    flag_for,
    name_path,
    os_error_line,
)


def expand_home(path: str) -> str | None:
    """`path` with a leading ~ or ~USER made that home folder, or None where there is none
    here (HOME unset for a user the system has no entry for, as in a container started
    with a bare --user; an unknown USER; HOME set empty, which Python takes for the root
    folder: 55 MB of caches were made in /.cache): such a path is not left to name a folder
    "~" in the current one, nor one at the root."""
    if path.split("/", 1)[0] == "~" and os.environ.get("HOME") == "":
        return None
    expanded = os.path.expanduser(path)
    return None if expanded.startswith("~") else expanded


def _expanded(path: str | os.PathLike) -> str:
    """`path` with its ~ made the home folder.

    Raises:
      UserError: it names a home folder there is none of here.
    """
    if (expanded := expand_home(os.fspath(path))) is None:
        raise UserError(
            f"{os.fspath(path)}: names a home folder this process has none of (HOME is unset "
            "or empty, or the user unknown); give the path in full"
        )
    return expanded


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URI stays as it is, a local path becomes absolute.

    Raises:
      UserError: a local path whose name this process cannot pass on as UTF-8 (TensorStore,
        which writes the checkpoints, takes no other): a name that is not ASCII under a
        locale without UTF-8 (LANG=C).
      TypeError: `path` is not a str or an os.PathLike of one (bytes, a number).
    """
    if not isinstance(os.fspath(path) if isinstance(path, os.PathLike) else path, str):
        raise TypeError(f"a path is a str or a pathlib.Path, not {type(path).__name__}: {path!r}")
    if is_remote(path):
        _check_scheme(os.fspath(path))
        _check_remote_support(os.fspath(path))
        _check_bucket_name(os.fspath(path))
        return epath.Path(path)
    path = epath.Path(_expanded(path)).absolute()
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        if sys.getfilesystemencoding() == "utf-8":  # Bytes no locale makes UTF-8.
            raise UserError(
                f"{shown}: this name holds bytes that are not UTF-8, so its files cannot be "
                "named to TensorStore; rename it, or use another path"
            ) from None
        raise UserError(
            f"{shown}: this name is not valid in this process's locale "
            f"(LANG={os.environ.get('LANG', '')!r}, "
            f"LC_ALL={os.environ.get('LC_ALL', '')!r}), so its files cannot be named to "
            "TensorStore; run with PYTHONUTF8=1 or a UTF-8 locale (LANG=C.UTF-8)"
        ) from None
    return path


# A Cloud Storage bucket's name: 3 to 63 lowercase letters, digits, dashes, underscores and
# dots, starting and ending with a letter or digit (longer dotted names are rare and left to
# the service). Anything else was retried for half a minute, then a traceback.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")


def _check_bucket_name(uri: str) -> None:
    """Refuses a gs:// path whose bucket name Cloud Storage cannot hold, before any request.

    Raises:
      UserError: naming the path and the rule.
    """
    scheme, _, rest = uri.partition("://")
    bucket = rest.split("/", 1)[0]
    if scheme == "gs" and not _BUCKET_NAME.fullmatch(bucket):
        raise UserError(
            f"{uri}: {bucket!r} is not a bucket name; give gs://BUCKET/PATH, BUCKET of 3-63 "
            "lowercase letters, digits, dashes, underscores or dots"
        )
    # TensorStore reads a bucket path as a URL, cut at either: the arrays of a run in
    # gs://b/runs/z#a went to gs://b/runs/z, shared with those of gs://b/runs/z#b.
    cut = [c for c in "#?" if c in rest]
    if scheme == "gs" and cut:
        raise UserError(
            f"{uri}: {' and '.join(repr(c) for c in cut)} in a bucket path, where TensorStore "
            "would cut the name and write elsewhere; rename it without them"
        )


# The URI schemes of etils.epath, through which every path here goes: another (file://,
# http://, memory://) ended in its KeyError's traceback.
_SCHEMES = ("gs", "s3", "az", "hf")


def _check_scheme(uri: str) -> None:
    """Refuses a URI of a scheme no path here can take.

    Raises:
      UserError: naming the path, and its local path where it is a file:// one.
    """
    scheme, _, rest = uri.partition("://")
    if scheme in _SCHEMES:
        return
    local = f"give it without file:// ({rest}), or " if scheme == "file" else "give "
    raise UserError(
        f"{uri}: {scheme}:// paths are not read here; {local}a local path or "
        f"{', '.join(f'{s}://' for s in _SCHEMES)}"
    )


def _check_remote_support(uri: str) -> None:
    """Refuses a URI whose file system this environment lacks (gs:// without gcsfs), before
    anything tries to open it; for a bucket, bounds its requests' waits first.

    Raises:
      UserError: naming the path and the install that adds its file system.
    """
    scheme = uri.split("://", 1)[0]
    reason = _missing_file_system(scheme)
    if reason is None:
        if scheme == "gs":
            _bound_bucket_waits()
        return
    how = (
        "`make train` with a gs:// WORKDIR or ARGS (make adds the gcs extra), or `pip install "
        "-e '.[gcs]'` in the clone (`pip install 'mlp_jax[gcs]'` elsewhere)"
        if scheme == "gs"
        else "the fsspec file system it names"
    )
    raise UserError(
        f"{uri}: {scheme}:// paths need a package this environment lacks ({reason}); add it "
        f"with {how}"
    )


@functools.cache
def _bound_bucket_waits() -> None:
    """Makes a bucket that goes silent (a route dropped, a server frozen) fail a request after
    $MLP_JAX_BUCKET_TIMEOUT seconds (60) without a byte, in each of the two GCS clients a run
    uses: gcsfs (the run's files) and TensorStore (Orbax's arrays). Neither bounds a wait by
    default: an eval against such a bucket waited for ever. A slow but live bucket is not
    cut: the bound is on silence, not on a request's length. Each client then retries as it
    does after any failed request (gcsfs makes six tries, with about half a minute of pauses;
    TensorStore 32)."""
    import aiohttp  # noqa: PLC0415  (gcsfs's HTTP client)
    import fsspec  # noqa: PLC0415

    seconds = bucket_timeout_seconds()
    fsspec.config.conf.setdefault("gs", {}).setdefault(
        "requests_timeout", aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds)
    )
    # Read as TensorStore makes its first HTTP transport, which is after this.
    whole = str(max(1, round(seconds)))
    os.environ.setdefault("TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS", whole)
    os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", whole)
    os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", "1")


def first_entry_of_no_file(folder: str | os.PathLike) -> str | None:
    """ "NAME, KIND" for the first entry of the local `folder` that is neither a regular file
    nor a folder (a named pipe, a device, a socket, a broken link), which a reader opening
    it would wait on or fail at; None where there is none (or the folder cannot be listed)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.is_file() or entry.is_dir()):
                return f"{entry.name}, {kind(Path(entry.path)) or 'gone meanwhile'}"
    return None


def answers_within(path: epath.Path, seconds: float) -> bool:
    """Whether the file system holding `path` tells what is there (one listing of it, in a
    thread of its own) within `seconds`: a bucket that has gone silent takes minutes to fail
    through its clients' retries."""
    answered = threading.Event()

    def look() -> None:
        with contextlib.suppress(Exception):
            kind(path)
            answered.set()

    threading.Thread(target=look, daemon=True).start()
    return answered.wait(seconds)


@functools.cache
def _missing_file_system(scheme: str) -> str | None:
    """Why fsspec (which etils.epath uses without TensorFlow) cannot reach `scheme`, or None."""
    import fsspec  # noqa: PLC0415  (only remote paths need it)

    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


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
    path = Path(_expanded(path))
    if path.is_absolute():
        candidates = [path]
    else:
        here = Path.cwd()
        candidates = [folder / path for folder in (here, *here.parents, _PACKAGE_PARENT)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for candidate in candidates:  # A folder or a pipe there was "no such file".
        if (found := kind(epath.Path(candidate))) is not None:
            raise UserError(f"{candidate}: {found}, not a file; give the file's path")
    where = (
        "" if path.is_absolute() else f" in {Path.cwd()}, any folder above it or {_PACKAGE_PARENT}"
    )
    raise UserError(
        f"{path}: no such file{where}; run from the repository (or a folder inside it) or "
        "give an absolute path"
    )


# What each kind of file system entry is called in an error.
_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
    stat.S_IFREG: "a file",
}


def identity(folder: epath.Path) -> tuple[int, int] | None:
    """Which local folder (or file) `folder` names now: its device and inode, or None where
    nothing is; asked again, it tells whether the name was moved or removed meanwhile."""
    try:
        status = os.stat(os.fspath(folder))
    except OSError:
        return None
    return status.st_dev, status.st_ino


def kind(path: epath.Path) -> str | None:
    """What stands at `path`: "a file", "a folder", "a named pipe (FIFO)", ... or None for
    nothing. Asked before a path is opened, since opening a pipe waits for a writer."""
    if is_remote(path):
        # One request: asking is_dir() and then exists() would see a folder that another
        # host is filling (a prefix empty, then holding its first object) as a file.
        try:
            return "a folder" if path.stat().is_directory else "a file"
        except FileNotFoundError:
            return None
        except OSError as e:  # (A bucket's 403, say, which gcsfs raises naming no file.)
            raise with_path(e, path) from None
    try:
        mode = os.stat(os.fspath(path)).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(os.fspath(path)) else None
    except OSError as e:
        raise with_path(e, path) from None
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


def require_kind(path: epath.Path, wanted: str, missing_ok: bool = True) -> bool:
    """Refuses `path` when something other than `wanted` ("a file" or "a folder") stands
    there; returns whether it exists.

    Raises:
      UserError: naming the path, what it is, and the flag that moves it.
    """
    found = kind(path)
    if found is None and missing_ok:
        return False
    if found != wanted:
        what = "nothing" if found is None else found
        raise UserError(
            f"{path} is {what} where {wanted} is needed; move it away or use another "
            f"{flag_for(path)}"
        )
    return True


# Errors whose class says what is wrong, which libraries raise with the path as message.
_MEANING_IN_CLASS = (FileNotFoundError, FileExistsError)


def with_path(error: OSError, path) -> OSError:
    """`error` naming `path` where it names no file (etils and fsspec raise some without)."""
    if error.filename is None:
        if error.strerror is None and not isinstance(error, _MEANING_IN_CLASS):
            # Raised with a message alone (gcsfs's 403, aiohttp's time-outs), which naming a
            # file would hide.
            error.strerror = str(error)
        error.filename = os.fspath(path)
    return error


def move_folder(source: epath.Path, target: epath.Path) -> None:
    """Moves the folder `source` to `target` (whose parent is made): a rename on a local disk
    (across two file systems, a copy, then the original removed); in an object store, which
    has neither folders nor rename, each object copied, then the originals deleted, all
    through etils.epath, whose listings then know of it. (Not fsspec's `mv`: gcsfs tries
    GCS's move API first, which some buckets refuse after 30 s.)"""
    if not is_remote(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            source.rename(target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.move(os.fspath(source), os.fspath(target))
        return
    for path in walk_files(source):
        (target / os.path.relpath(os.fspath(path), os.fspath(source))).write_bytes(read_bytes(path))
    source.rmtree()


def remove_folder(folder: epath.Path) -> None:
    """Deletes `folder` and everything in it; nothing if it is gone. A link standing there is
    removed, not followed.

    Raises:
      OSError: naming the whole path of what could not be deleted (shutil.rmtree names only
        its last part).
    """
    if is_remote(folder):
        try:
            folder.rmtree(missing_ok=True)
        except OSError as e:
            raise with_path(e, folder) from None
        return
    root = os.fspath(folder)
    if os.path.islink(root):
        os.unlink(root)
        return
    if not os.path.lexists(root):
        return
    for where, folders, names in os.walk(root, topdown=False, onerror=_raise):
        for name in names:
            os.unlink(os.path.join(where, name))
        for name in folders:  # Links to folders are listed here; they are unlinked.
            path = os.path.join(where, name)
            (os.unlink if os.path.islink(path) else os.rmdir)(path)
    os.rmdir(root)


def _raise(error: OSError) -> None:
    raise error


def walk_files(folder: epath.Path):
    """Every regular file under `folder`, at any depth (local or remote: epath's rglob
    refuses `**` on GCS)."""
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        raise with_path(e, folder) from None
    for entry in entries:
        found = kind(entry)
        if found == "a folder":
            yield from walk_files(entry)
        elif found == "a file":
            yield entry


def read_bytes(path: epath.Path) -> bytes:
    """The bytes of the regular file at `path` (never a pipe or a device, which could block
    or never end).

    Raises:
      UserError: something other than a file stands there.
      FileNotFoundError, and other OSErrors, naming the path.
    """
    if not require_kind(path, "a file"):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(path))
    try:
        return path.read_bytes()
    except OSError as e:
        raise with_path(e, path) from None


def read_text(path: epath.Path) -> str:
    """`read_bytes` decoded as UTF-8.

    Raises:
      UserError: as `read_bytes`, or the bytes are not UTF-8 text.
    """
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}), so not the file kept "
            "there; restore it, or move it away"
        ) from None


def write_atomically(path: epath.Path, content: str | bytes) -> None:
    """Replaces the file at `path` with `content`; a reader sees the old file or the new one.

    On a local disk it is written to a temporary name beside it, then renamed over it; an
    object store (gs://) writes an object whole or not at all, so it is written in place
    (a rename there is a copy and a delete). Two processes writing one file take turns
    (see `_temporary_beside`): the later one's content is the file's.

    Raises:
      UserError: a folder, a pipe or a device stands at `path`, or another process held
        its temporary file for TEMPORARY_WAIT_SECONDS.
      OSError: the write failed (a full disk, a read-only folder), naming the path; the
        temporary file is removed.
    """
    require_kind(path, "a file")
    data = content.encode("utf-8") if isinstance(content, str) else content
    if is_remote(path):
        try:
            path.write_bytes(data)
        except OSError as e:
            raise with_path(e, path) from None
        return
    with _temporary_beside(path) as (tmp, descriptor):
        # Written through a second descriptor, closed before the rename: NFS reports a
        # write it deferred (a full disk, a quota) at close, which must fail the write
        # while the old file is still in place. The first holds the lock.
        written = os.dup(descriptor)
        try:
            _write_all(written, data)
        finally:
            os.close(written)
        os.replace(tmp, path)  # Before the lock is let go: the next writer waits for it.


def _write_all(descriptor: int, data: bytes) -> None:
    """Writes all of `data` at the descriptor's offset (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


# How long a write waits for another process writing the same file (a record of a few
# kilobytes takes milliseconds) before it gives up in one line.
TEMPORARY_WAIT_SECONDS = 60.0


@contextlib.contextmanager
def _temporary_beside(path: epath.Path):
    """Yields (the temporary name beside the local `path`, a descriptor of it open for
    writing), empty and locked (flock): a regular file of one name, never a link's target,
    and never a pipe, which would hold the write for ever. A process writing the same file
    holds that lock until its rename: this one waits for it, then writes a file of its own,
    where both had written into one (one's truncation emptying what the other had written,
    the renamed file holding part of each). A write cut short leaves its file there, unlocked,
    and the next takes it. Removed, and the error named by `path`, where the write fails. On
    a file system without locks (Lustre's default, NFS without its lock daemon) it is
    written unlocked, as before there were locks. (Two hosts writing one file on NFS may
    still meet: a host's view of the name can lag.)

    Raises:
      UserError: something other than a regular file stands at the temporary name (left as
        it is), or another process held it for TEMPORARY_WAIT_SECONDS.
    """
    tmp = path.parent / f".{path.name}.tmp"
    deadline = time.monotonic() + TEMPORARY_WAIT_SECONDS
    while True:
        if time.monotonic() > deadline:  # Every round ends (another writer each time).
            raise _waited_too_long(tmp, path)
        try:
            descriptor, made = open_one_name(tmp, f"{path.name} first")
        except OSError as e:  # Named by the file the user knows (a read-only folder).
            raise OSError(e.errno, e.strerror, os.fspath(path)) from None
        try:
            _lock_before(descriptor, deadline, tmp, path)
            if _names_it(tmp, descriptor):  # Not renamed or removed by the writer waited for.
                if made or os.fstat(descriptor).st_uid == os.geteuid():
                    break
                _remove_foreign(tmp, descriptor, path)
        except BaseException as e:
            os.close(descriptor)
            if isinstance(e, OSError):
                raise with_path(e, path) from None
            raise
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        yield tmp, descriptor
    except BaseException as e:
        # Only while it is still this write's: renamed, its name may be another writer's.
        with contextlib.suppress(OSError):
            if _names_it(tmp, descriptor):
                os.remove(tmp)
        if isinstance(e, OSError):
            raise with_path(e, path) from None
        raise
    finally:
        os.close(descriptor)


def open_one_name(path: epath.Path, writes: str, access: int = os.O_WRONLY) -> tuple[int, bool]:
    """(A descriptor of the regular file of one name at the local `path`, opened with
    `access` and made where absent; whether this call made it): never a link's target (a
    user's file elsewhere, or through a hard link its other name's, would be written) and
    never a pipe, which would hold the command for ever.

    Raises:
      UserError: a link or a pipe stands at `path` (left as it is), naming what the command
        `writes` there; a folder, named as one.
    """
    require_kind(path, "a file")
    # A link, or a pipe made since: refused without being followed or waited on.
    flags = access | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        try:
            descriptor, made = os.open(path, flags | os.O_EXCL, 0o666), True
        except FileExistsError:
            descriptor, made = os.open(path, flags, 0o666), False
        status = os.fstat(descriptor)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        descriptor = None
    # (A pipe made since the kind was asked opens for reading and writing without waiting.)
    if descriptor is not None and status.st_nlink == 1 and stat.S_ISREG(status.st_mode):
        return descriptor, made
    if descriptor is not None:
        os.close(descriptor)
    raise UserError(
        f"{path}: a link or a pipe where this command writes {writes}; remove it (a link's "
        f"target is not touched), or use another {flag_for(path)}"
    )


# flock's answers where the file system has no locks (the writes and the lock go on unlocked).
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


def _lock_before(descriptor: int, deadline: float, tmp: epath.Path, path: epath.Path) -> None:
    """Takes the exclusive lock of `path`'s temporary file `tmp`, open at `descriptor`,
    waiting for its holder until `deadline` (polled: a blocking flock would not end at a
    deadline)."""
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise _waited_too_long(tmp, path) from None
            time.sleep(0.01)
        except OSError as e:
            if e.errno in NO_LOCKS:
                return
            raise


def _waited_too_long(tmp: epath.Path, path: epath.Path) -> UserError:
    """The error of a write that waited TEMPORARY_WAIT_SECONDS for another writer of `path`
    (holding its temporary file `tmp`)."""
    return UserError(
        f"{tmp}: another process has been writing {path.name} "
        f"for {TEMPORARY_WAIT_SECONDS:.0f} s; let it end (or end it), then rerun, or use "
        f"another {flag_for(path)}"
    )


def _remove_foreign(tmp: epath.Path, descriptor: int, path: epath.Path) -> None:
    """Removes the file at `tmp`, locked and named, that another user owns (planted in a
    shared folder), or that the file system says another does (a write of this process's
    cut short, on an NFS export squashing root to nobody): renamed into place, the result
    would be that user's. The next round makes one of this process's."""
    try:
        os.remove(tmp)
    except PermissionError:  # A sticky shared folder: only its owner may.
        raise UserError(
            f"{tmp}: a file of another user (uid {os.fstat(descriptor).st_uid}) where this "
            f"command writes {path.name} first; remove it, or use another {flag_for(path)}"
        ) from None


def _names_it(tmp: epath.Path, descriptor: int) -> bool:
    """Whether `tmp` still names the file open at `descriptor`."""
    try:
        named = os.lstat(tmp)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def write_record(path: epath.Path, record) -> None:
    """Writes `record` as JSON, atomically: a kill mid-write leaves the last record whole,
    which matters for the records a rerun resumes from (a search's, an ablation's)."""
    write_atomically(path, json.dumps(record, indent=1) + "\n")


def read_record(path: epath.Path, shape=dict):
    """The JSON record at `path`, or None where there is none.

    Args:
      path: the record's file.
      shape: what the reader indexes: a type (float takes an int too), a dict of key ->
        shape (other keys may be there too), {str: shape} for an object of any keys whose
        values are of that shape, or a one-item list [shape] for a list of them.

    Raises:
      UserError: the file is not valid JSON (edited by hand, or written by a version that
        did not write atomically), lacks a value its reader takes or holds one of another
        kind, or is not a file.
    """
    if not require_kind(path, "a file"):
        return None
    fix = f"restore it (git checkout -- {path.name} in its folder) or delete it to measure again"
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); {fix}") from None
    if (problem := shape_problem(record, shape)) is not None:
        raise UserError(f"{path}: {problem}: not the record kept there; {fix}")
    return record


_JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def shape_problem(value, shape, where: str = "") -> str | None:
    """What in `value` (a JSON value, at `where` in its record) is not of `shape`
    (read_record's), or None."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return _kind_problem(value, dict, where)
        if list(shape) == [str]:
            shape = dict.fromkeys(value, shape[str])
        for key, inner in shape.items():
            if key not in value:
                return f"{_where(where)} lacks {key!r}"
            if (problem := shape_problem(value[key], inner, f"{where}[{key!r}]")) is not None:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _kind_problem(value, list, where)
        (inner,) = shape
        for i, item in enumerate(value):
            if (problem := shape_problem(item, inner, f"{where}[{i}]")) is not None:
                return problem
        return None
    kinds = (int, float) if shape is float else shape
    if isinstance(value, kinds) and (shape is bool or not isinstance(value, bool)):
        return None
    return _kind_problem(value, shape, where)


def _kind_problem(value, kind: type, where: str) -> str:
    return f"{_where(where)} is {_JSON_KINDS[type(value)]}, not {_JSON_KINDS[kind]}"


def _where(where: str) -> str:
    return f"record{where}" if where else "the record"


def prepare_folder(
    folder: epath.Path,
    what: str = "--workdir",
    folders: tuple[str, ...] = (),
    regular_files: tuple[str, ...] = (),
) -> None:
    """Makes sure a command can write into `folder` before it starts its work: a folder (made
    if missing) that this process can write a file into, in which each of `folders` is a
    folder this process can write into and each of `regular_files` a regular file, where
    they exist.

    Args:
      folder: the folder (local or remote).
      what: the flag that names it, for the message (e.g. "--workdir").
      folders, regular_files: names inside it that must be of that kind.

    Raises:
      UserError: naming the path, what is wrong and the fix.
    """
    if flag_for(folder) == "path":  # A folder no command named: its errors name `what`.
        name_path(folder, what)
    try:
        found = kind(folder)
        if found not in (None, "a folder"):
            raise UserError(
                f"{what}={folder} is {found}, not a folder; move it away or use another"
            )
        for name in regular_files:
            require_kind(folder / name, "a file")
        for name in folders:
            require_kind(folder / name, "a folder")
        writable = [folder, *(folder / name for name in folders if (folder / name).exists())]
        for place in writable:
            write_probe(place)
    except OSError as e:
        line = os_error_line(with_path(e, folder), flag=what) or f"{folder}: {e}"
        raise UserError(f"{what}={folder} cannot be written: {line}") from None


def write_probe(folder: epath.Path) -> None:
    """Makes `folder` if missing, then writes and removes a file in it: proves this process
    can write there.

    Raises:
      OSError: it cannot.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write_probe.{os.getpid()}"
    probe.write_text("")
    probe.unlink()


# Files a run may hold open at once: TensorStore writes a checkpoint's files in parallel
# (a save failed under 16 and passed under 24 for the chapter's model), with room.
MIN_OPEN_FILES = 64
# What a command raises its own limit to, where the system allows.
WANTED_OPEN_FILES = 4096


def raise_open_file_limit() -> None:
    """Raises this process's limit on open files towards WANTED_OPEN_FILES, as far as its
    hard limit allows, so that a low `ulimit -n` does not fail a checkpoint's save in
    Orbax's threads midway.

    Raises:
      UserError: the hard limit is below MIN_OPEN_FILES.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling < MIN_OPEN_FILES:
        raise UserError(
            f"this process may open {ceiling} files at most (`ulimit -n`), and saving a "
            f"checkpoint needs about {MIN_OPEN_FILES}; raise the limit (ulimit -n 1024) and rerun"
        )
