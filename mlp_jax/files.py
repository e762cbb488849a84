"""Paths a user gives (workdir, data_dir, results), local or remote (gs://, s3://, ...).

Every file the library writes or reads goes through `etils.epath`, as Orbax's own files do,
so `--workdir=gs://bucket/run` works on a TPU VM. Object stores cannot append or rename in
place, so files are written whole: to a temporary name, then moved over the old one, which
on a local disk is atomic and on an object store leaves either the old or the new object.
"""

import os

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URI stays as it is, a local path becomes absolute."""
    path = epath.Path(path)
    if is_remote(path):
        return path
    return path.expanduser().absolute()


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI of a remote file system (gs://, s3://, ...)."""
    return "://" in os.fspath(path)


def write_atomically(path: epath.Path, content: str | bytes) -> None:
    """Replaces the file at `path` with `content`; a reader sees the old file or the new one."""
    tmp = path.parent / f".{path.name}.tmp"
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)
