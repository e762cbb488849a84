"""Orbax checkpoints of the full train state: save, resume with fallback, fingerprint,
and restore a workdir for evaluation and notebooks.

Layout: WORKDIR/checkpoints/<epoch>/{state, meta}. `state` is the TrainState (parameters,
optimiser state, step, epoch, RNG key data) as one unreplicated copy, so any parallel mode
restores any other's checkpoint; `meta` is JSON holding the fingerprint of the whole state,
which is checked on restore, so a truncated or tampered checkpoint is never used. A checkpoint
whose arrays this process would build otherwise (another model's shapes; other dtypes, as
under another JAX_ENABLE_X64) is refused before it is read, never taken for a damaged one and
moved: Orbax's own metadata says what each saved array is.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a kill
at any moment leaves the previous checkpoints intact; leftovers are cleaned on the next start.
Every path goes through etils.epath, so a workdir may be remote (gs://...).
"""

import contextlib
import hashlib
import importlib
import json
import logging as stdlib_logging
import os
import re
import resource
import sys
import time
import traceback
import urllib.parse
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import linen as nn
from jax.experimental import multihost_utils

from mlp_jax import config as config_lib
from mlp_jax import errors, files, models, optim, parallel, steps
from mlp_jax.errors import UserError

CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "checkpoints_unreadable"
# Orbax, imported where a checkpoint is first read or written: a run starting afresh needs
# none of its tenth of a second of imports before its first save (`mlp_jax.train` imports it
# meanwhile, while the first epoch runs).
ORBAX = "orbax.checkpoint"
# The folders each checkpoint holds, one per item saved (see `CheckpointStore.save`).
_ITEMS = ("state", "meta")
# The file of a finished save that describes its arrays (their tree, shapes and dtypes).
_METADATA_OF_ARRAYS = "state/_METADATA"
# Where it lists the arrays each process wrote.
_ARRAY_LISTINGS = "state/array_metadatas"
# The JSON a run saves beside the state (its epoch, its fingerprint, ...).
_META_FILE = "meta/metadata"
CONFIG_FILE = "config.json"


def _whole(leaf) -> np.ndarray:
    """A host copy of an array, gathered from every process where it is sharded over them
    (a population's state on several hosts)."""
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
        leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return np.asarray(leaf)


def first_value(leaf) -> int:
    """The first element of a counter (a run's epoch; a population's, one per member, all
    equal), read from this process's own shard."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_shards[0].data
    return int(np.asarray(leaf).reshape(-1)[0])


def fingerprint(tree) -> str:
    """sha256 over the bytes, shapes and dtypes of a tree's arrays, in tree order: equal iff
    the trees are bit-identical."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        array = np.ascontiguousarray(_whole(leaf))
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def params_fingerprint(params) -> str:
    """The parameters' fingerprint (what `--mode=eval` prints to identify a model)."""
    return fingerprint(params)


# Substrings of Orbax's errors for a checkpoint whose arrays have other shapes or another
# structure than the state asked for: a different model, not damaged bytes. (The layout check
# catches these first; the signs hold where a checkpoint's metadata cannot be read.)
_MISMATCH_SIGNS = ("not compatible with the stored shape", "tree structure", "Missing key")
# How many listings of a workdir's checkpoints a read-only restore makes, while a run saving
# there rotates out the ones it was reading (an evaluation of a run in progress).
_LISTINGS = 5


# What Orbax and TensorStore misread in the name of a folder of checkpoints: a backslash,
# which TensorStore takes for a separator (nothing written there can be read back), and, in
# one saved into, glob's "[", "]", "*" and "?", which make the glob by which Orbax gathers a
# save's arrays a pattern: "[x]" matches none of them (the save ended with status 0, its
# arrays out of its index, and the next run set the run aside whole), "*" and "?" the
# folders of other runs beside it too. One moved under such a name after its saves still
# reads.
_MISREAD_IN_NAMES = {"read": "\\", "save": "[]*?\\"}


def workdir_path(workdir: str | os.PathLike, use: str = "save") -> epath.Path:
    """`files.as_path(workdir)`, for a folder whose checkpoints are read or saved (`use`).

    Raises:
      UserError: its name holds a character Orbax or TensorStore would misread there.
    """
    path = files.as_path(workdir)
    found = [c for c in _MISREAD_IN_NAMES[use] if c in os.fspath(path)]
    if found:
        raise UserError(
            f"{path}: {' and '.join(repr(c) for c in found)} in the path of a folder of "
            "checkpoints, which Orbax and TensorStore misread (its checkpoints could not be "
            "read back); use a path without them"
        )
    return path


class _Rotated(Exception):
    """A checkpoint went away while a read-only restore read it: list them again."""


def _keep_stray_reads_off_stderr() -> None:
    """Drops the reports of a failed restore's stray reads from this process's stderr.

    Orbax restores in an event loop of its own and closes it as soon as one read fails. The
    reads still in flight then finish into the closed loop ("Event loop is closed", raised on
    TensorStore's threads) or fail with nobody awaiting them, and Python prints each, with a
    traceback, whenever it happens: as an unraisable exception, or through asyncio's logger
    ("Future exception was never retrieved"); often hundreds of lines, epochs into the run
    that resumed from an older checkpoint, and some before the failed restore returns. So
    it is installed before a restore begins. The restore's failure itself is handled (set
    aside, or one line), so exactly those reports are dropped; every other goes on as
    before. The hook is installed again if something has replaced it since."""
    previous = sys.unraisablehook
    if not getattr(previous, "drops_stray_reads", False):

        def hook(unraisable) -> None:
            if not _is_a_stray_read(unraisable.exc_value, unraisable.exc_traceback):
                previous(unraisable)

        hook.drops_stray_reads = True
        sys.unraisablehook = hook
    asyncio_logger = stdlib_logging.getLogger("asyncio")
    if not any(isinstance(f, _DropStrayReads) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropStrayReads())


class _DropMissingMetadata(stdlib_logging.Filter):
    """Drops Orbax's warning that a checkpoint folder lacks its metadata file, logged as it
    lists them (`_check_whole` says so of that folder in the command's one line), and its
    error lines for one it cannot parse (an empty file): not needed to restore, it is passed
    over, and the lines came 3 to 6 times a command (trial 12)."""

    def filter(self, record: stdlib_logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            ("Metadata file does not exist", "Failed to json parse Metadata file")
        )


def _quiet_missing_metadata() -> None:
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _DropMissingMetadata) for f in absl_logger.filters):
        absl_logger.addFilter(_DropMissingMetadata())


class _DropStrayReads(stdlib_logging.Filter):
    """Passes every record of asyncio's logger but the reports of stray reads."""

    def filter(self, record: stdlib_logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not _is_a_stray_read(error, None)


# TensorStore's errors begin with their status code ("OUT_OF_RANGE: Error reading ...").
_TENSORSTORE_STATUS = re.compile(r"[A-Z_]+: ")
# The checkpoint folders this process has restored from, as libraries spell them.
_RESTORED_FOLDERS: set[str] = set()


def _is_a_stray_read(error: BaseException | None, reported_at) -> bool:
    """Whether `error`, reported where `reported_at` (a traceback) says, is a stray read:
    "Event loop is closed" raised in `call_soon_threadsafe`; an exception raised in Orbax's
    own code; or an error of TensorStore's (its status code first) that names a checkpoint
    folder this process restored from, handed over unraised or through asyncio's frames
    alone."""
    frames = traceback.extract_tb(reported_at)
    if error is not None:
        frames += traceback.extract_tb(error.__traceback__)
    if str(error) == "Event loop is closed":
        return any(frame.name == "call_soon_threadsafe" for frame in frames)
    if error is None:
        return False
    text = str(error)
    asyncios = all(f"{os.sep}asyncio{os.sep}" in frame.filename for frame in frames)
    if asyncios and _TENSORSTORE_STATUS.match(text) and any(f in text for f in _RESTORED_FOLDERS):
        return True  # Unraised, or through asyncio's own frames alone (1 in 29; trial 12).
    return any(f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in frame.filename for frame in frames)


class Damaged(ValueError):
    """A checkpoint's bytes were read and are not those it was saved with."""


# What Orbax and TensorStore say of a checkpoint's own bytes when they are damaged: a file
# cut short (OUT_OF_RANGE), bytes failing their checksum or format (DATA_LOSS, "Error
# decoding"), a file its manifest lists but that is missing (NOT_FOUND). Each counts only
# where the message names a file of that checkpoint.
_DAMAGE_SIGNS = (
    "DATA_LOSS",
    "OUT_OF_RANGE",
    "NOT_FOUND",
    "Error decoding",
    # An array's chunk that does not decompress (cut short, or bytes overwritten).
    "Zstd-compressed stream",
    "ZSTD_decompressStream() failed",
)
# Errors of the same meaning raised by Python while the checkpoint's own JSON files are
# parsed (nothing else is parsed during a restore), or by the fingerprint's check. (JSON
# nested too deep, a RecursionError, is told by `_description_damage`'s own parse.)
_DECODING_ERRORS = (Damaged, json.JSONDecodeError, UnicodeDecodeError)


def damage_evidence(error: BaseException, folder: epath.Path) -> str | None:
    """What in `error` (or the errors it was raised from) proves that the checkpoint in
    `folder` has damaged bytes, in a few words; None when nothing does (the environment, a
    library or a bug failed, and the checkpoint may be whole).

    Followed: the errors an error was raised from, and those it was raised while handling
    unless it said so (`from None`). A missing file counts only when it is that
    checkpoint's.
    """
    names = _spellings(folder)
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = f"{error} {getattr(error, 'filename', '') or ''}"
        inside = any(name in text for name in names)
        if isinstance(error, _DECODING_ERRORS):
            return errors.first_line(error)
        if inside and (
            isinstance(error, FileNotFoundError) or any(sign in text for sign in _DAMAGE_SIGNS)
        ):
            return errors.first_line(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def _description_damage(folder: epath.Path) -> str | None:
    """What proves damaged the JSON files of a checkpoint that failed to restore (or read as
    another model's): its meta not JSON or nested too deep; the description of its arrays
    (Orbax writes it before the checkpoint is committed, of these kinds only) missing, not
    JSON, no tree, an empty one, an entry of no array, or fewer arrays than a process's
    listing of those it wrote (taken for "a model of other shapes", or tracebacks; trial
    12). None where they are whole, or cannot be read (the readability check decides).
    Asked only of a failure: their format is Orbax's own, and a checkpoint that restores is
    never called damaged by it."""
    meta = _json_of(folder / _META_FILE)
    if isinstance(meta, str):
        return meta
    path = folder / _METADATA_OF_ARRAYS
    if files.kind(path) is None:
        return f"its {_METADATA_OF_ARRAYS} is missing"
    described = _json_of(path)
    if isinstance(described, str) or described is None:
        return described
    tree = described.get("tree_metadata") if isinstance(described, dict) else None
    if not (isinstance(tree, dict) and tree):
        return f"its {_METADATA_OF_ARRAYS} describes no tree of arrays"
    arrays = 0
    for entry in tree.values():
        keys = entry.get("key_metadata") if isinstance(entry, dict) else None
        value = entry.get("value_metadata") if isinstance(entry, dict) else None
        if not (isinstance(keys, list) and isinstance(value, dict)):
            return f"its {_METADATA_OF_ARRAYS} holds an entry of no array"
        arrays += value.get("value_type") == "jax.Array"
    # Counted, not named: each process lists the arrays it wrote, a part of those described
    # (empty containers are described too, as skipped).
    listings = folder / _ARRAY_LISTINGS
    # Listed, not globbed: a glob of the path takes the workdir's name for a pattern.
    names = [p.name for p in listings.iterdir()] if listings.is_dir() else []
    for listing in (listings / name for name in sorted(names) if name.startswith("process_")):
        listed = _json_of(listing)
        if isinstance(listed, str) or listed is None:
            return listed
        held = listed.get("array_metadatas") if isinstance(listed, dict) else None
        if not isinstance(held, list):
            return f"its {_ARRAY_LISTINGS}/{listing.name} lists no arrays"
        if len(held) > arrays:
            return (
                f"its {_ARRAY_LISTINGS}/{listing.name} lists {len(held)} arrays, and its "
                f"{_METADATA_OF_ARRAYS} describes {arrays}"
            )
    return None


def _json_of(path: epath.Path):
    """The JSON a checkpoint's file holds; a few words where it is not JSON (damage); None
    where it cannot be read (the readability check decides)."""
    try:
        return json.loads(files.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"its {path.parent.name}/{path.name} is not valid JSON"
    except RecursionError:
        return f"its {path.parent.name}/{path.name} is JSON nested too deep"
    except (OSError, UserError):
        return None


def _spellings(folder: epath.Path) -> tuple[str, ...]:
    """How libraries write a checkpoint folder's path in their messages: as it is, and as an
    object key in a URL (gcsfs names a missing object by its URL)."""
    path = os.fspath(folder)
    key = path.split("://", 1)[1].split("/", 1)[-1] if "://" in path else path
    return path, urllib.parse.quote(key, safe="")


def _check_entries(folder: epath.Path) -> None:
    """Checks, before Orbax reads a checkpoint, that this process can: every entry is a file
    it can open or a folder it can list. A pipe, a socket or a device (which TensorStore
    would open and wait on) or a permission denied is not damage of its bytes, so nothing is
    moved; and refused here, it is one line rather than Orbax's tasks failing one by one.
    (An object store holds objects only, and answers permissions per bucket.)

    Raises:
      UserError: naming the entry and what is wrong.
    """
    if files.is_remote(folder):
        return

    def refuse(error: OSError):
        line = errors.os_error_line(error) or f"{error.filename}: {error}"
        raise UserError(
            f"checkpoint {folder} cannot be read by this process ({line}); "
            "nothing was moved; mend that and rerun"
        )

    for root, folders, names in os.walk(os.fspath(folder), onerror=refuse):
        for name in folders + names:
            entry = epath.Path(root) / name
            found = files.kind(entry)
            if found not in ("a file", "a folder"):
                raise UserError(
                    f"{entry} is {found}, where a checkpoint holds files and folders only; "
                    "nothing was moved; move it away and rerun"
                )
            if found == "a file":
                try:
                    os.close(os.open(os.fspath(entry), os.O_RDONLY))
                except OSError as e:
                    refuse(e)


# What a run's checkpoints hold in their meta beside the state's fingerprint, and its readers
# take from it (a population's saves hold their histories instead).
RUN_META = ("steps_per_epoch",)
# The whole numbers of a checkpoint's meta, where present, and their ranges.
_META_RANGES = {"epoch": (0, 2**31 - 1), "step": (0, 2**31 - 1), "steps_per_epoch": (1, 2**31 - 1)}

# The file of each checkpoint that Orbax's manager reads as it lists them.
_LISTED_METADATA = "_CHECKPOINT_METADATA"


def _check_checkpoint_metadata(checkpoints: epath.Path) -> None:
    """Checks what Orbax's manager reads as it lists the checkpoints (each one's own
    metadata file), as _check_entries checks a checkpoint before it is restored: a pipe or a
    device there held the listing for ever, deaf to SIGTERM; JSON of another shape was
    Orbax's traceback in every command. A checkpoint whose folder is a link leading nowhere
    (a disk not mounted) was passed over without a word, an older one evaluated. A
    checkpoint a running run rotates out meanwhile is passed over, as the listing passes it
    over.

    Raises:
      UserError: naming the file or the link.
    """
    if files.is_remote(checkpoints) or files.kind(checkpoints) != "a folder":
        return
    with contextlib.suppress(FileNotFoundError), os.scandir(checkpoints) as entries:
        for step in entries:
            if step.name.isdigit() and step.is_symlink() and not os.path.exists(step.path):
                raise UserError(
                    f"{step.path}: {_what_stands(epath.Path(step.path))} (a disk not mounted?); "
                    "nothing was moved: mount it, or move the link away, and rerun"
                )
            if not (step.name.isdigit() and step.is_dir()):
                continue
            metadata = epath.Path(step.path) / _LISTED_METADATA
            if (found := files.kind(metadata)) not in (None, "a file"):
                raise UserError(
                    f"{metadata} is {found}, where a checkpoint holds a file; nothing was "
                    "moved; move it away and rerun"
                )
            if found and (problem := _listed_metadata_problem(metadata)):
                raise UserError(
                    f"{metadata}: {problem}, which Orbax cannot list; nothing was moved: the "
                    "file is not needed to restore, move it away and rerun"
                )


# Orbax's fields of a checkpoint's own metadata file that are not objects: the nanosecond
# times it reads as dates (up to the year 9999).
_LISTED_TIMES = ("init_timestamp_nsecs", "commit_timestamp_nsecs")
_LAST_NANOSECOND = 253402300800 * 10**9


def _taken(path: epath.Path) -> bool:
    """Whether something stands at `path` (locally, a link leading nowhere too)."""
    return path.exists() if files.is_remote(path) else os.path.lexists(path)


def _what_stands(path: epath.Path) -> str:
    """What stands at a local `path` that is there, in a few words (a link named as one)."""
    if os.path.islink(path):
        gone = "" if os.path.exists(path) else ", which is not there"
        return f"a link to {os.readlink(path)}{gone}"
    return files.kind(path) or "something"


def _listed_metadata_problem(path: epath.Path) -> str | None:
    """What in a checkpoint's own metadata file Orbax's listing would fail on: JSON that is
    not an object, or fields of other kinds. JSON it cannot parse (an empty file) it passes
    over, warning (`_DropMissingMetadata`); so does this."""
    try:
        listed = json.loads(files.read_bytes(path))
    except RecursionError:
        return "JSON nested too deep"
    except (OSError, UserError, ValueError):
        return None
    if not isinstance(listed, dict):
        return f"a JSON {type(listed).__name__}, not an object"
    handlers = listed.get("item_handlers")
    if handlers is not None and not isinstance(handlers, dict | str):
        return "its item_handlers are neither an object nor a string"
    for name in _LISTED_TIMES:
        time_ = listed.get(name)
        if time_ is not None and not (
            isinstance(time_, int) and not isinstance(time_, bool) and 0 <= time_ < _LAST_NANOSECOND
        ):
            return f"its {name} is no time in nanoseconds"
    for name in ("metrics", "performance_metrics", "custom_metadata"):
        if listed.get(name) is not None and not isinstance(listed[name], dict):
            return f"its {name} is not an object"
    return None


def _file_size_limit_problem(state, epoch: int | None = None) -> str | None:
    """The process's limit on the size of a file it writes (`ulimit -f`), if a checkpoint of
    `state` (arrays, or their shapes) may need a larger one (Orbax packs the arrays into few
    files): past it, the save failed in Orbax's threads with hundreds of lines, and four
    tracebacks."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    state_bytes = parallel.nbytes(state)
    if limit == resource.RLIM_INFINITY or limit >= state_bytes + _SAVE_OVERHEAD_BYTES:
        return None
    which = "each checkpoint" if epoch is None else f"the checkpoint of epoch {epoch}"
    return (
        f"this process may write files of {limit / 2**20:.2f} MB at most (`ulimit -f`), and "
        f"{which} writes up to about {(state_bytes + _SAVE_OVERHEAD_BYTES) / 2**20:.2f} MB in one"
    )


def _missing_items(folder: epath.Path) -> list[str]:
    """The item folders (state, meta) a checkpoint's folder lacks: none in a whole one."""
    return [item for item in _ITEMS if files.kind(folder / item) != "a folder"]


# How much longer than the workdir's name the paths of a checkpoint's files are, with room
# (Orbax's are about 90 bytes longer: checkpoints/N/state/ocdbt.process_0/d/<32 hex>).
_CHECKPOINT_PATH_ROOM = 160


def _check_path_room(workdir: epath.Path) -> None:
    """Refuses, before a run trains, a local workdir whose name leaves too little of the
    system's limit on a path (PATH_MAX) for its checkpoints' files: a save then failed in
    Orbax's threads, hundreds of lines, nothing saved.

    Raises:
      UserError: naming the lengths and the fix.
    """
    if files.is_remote(workdir):
        return
    limit = os.pathconf("/", "PC_PATH_MAX")
    length = len(os.fsencode(os.fspath(workdir)))
    if length + _CHECKPOINT_PATH_ROOM > limit:
        raise UserError(
            f"{os.fspath(workdir)[:60]}...: a workdir of {length} bytes leaves too little of "
            f"the system's {limit} for the paths of its checkpoints' files; use a shorter "
            "--workdir"
        )


def _check_whole(folder: epath.Path) -> None:
    """Refuses a folder Orbax takes for a finished checkpoint that lacks an item's folder (a
    folder made by hand, or a part removed): Orbax would fail with a KeyError naming no
    path. Nothing is moved, since no bytes of it were read to prove it damaged."""
    missing = _missing_items(folder)
    if missing:
        raise UserError(
            f"{folder}: not a whole checkpoint (no {' or '.join(missing)} folder in it); "
            f"nothing was moved; move it out of {folder.parent}, then rerun"
        )


# What a checkpoint holds beyond its arrays' bytes (Orbax's metadata, the meta JSON, file
# system blocks), with room: measured under 3% and 20 KB for the chapter's model.
_SAVE_OVERHEAD_FRACTION, _SAVE_OVERHEAD_BYTES = 0.1, 2**16
# Files and folders a checkpoint makes (counted: 24 for the chapter's model), with room.
_SAVE_FILES = 64

Layout = dict[str, tuple[tuple[int, ...], str]]

# Orbax writes a save into a folder named N.orbax-checkpoint-tmp-... until it is complete, and
# skips such folders when it lists the checkpoints: one being deleted is renamed so first.
_UNFINISHED = ".orbax-checkpoint-tmp"
_ROTATED = f"{_UNFINISHED}-rotated-"


# In a bucket, the object that proves a folder's deletion was begun by a run's rotation:
# written before the commit marker goes, so that a later start deletes only what a rotation
# began (a folder without a marker may be a user's, or a save Orbax itself will redo).
_ROTATED_OUT = ".rotated-out"


def _commit_marker() -> str:
    """The file Orbax writes last into a save in a bucket, and requires there to count it."""
    return importlib.import_module(ORBAX).path.atomicity_types.COMMIT_SUCCESS_FILE


def _take_out_of_sight(folder: epath.Path, epoch: int) -> epath.Path:
    """Hides checkpoint `folder` from Orbax in one step, before it is deleted file by file, so
    that a deletion failing midway never leaves it listed, half gone: on a local disk it is
    renamed as an unfinished save; in a bucket, where a rename copies every object, it is
    marked as rotated out, then its commit marker goes. Returns where it now is."""
    if files.is_remote(folder):
        (folder / _ROTATED_OUT).write_text("")
        (folder / _commit_marker()).unlink(missing_ok=True)
        return folder
    return folder.rename(folder.with_name(f"{epoch}{_ROTATED}{time.time_ns()}"))


def _delete(folder: epath.Path, why: str) -> None:
    """Deletes `folder` (a checkpoint, or a save's leftovers); a failure is a warning."""
    try:
        files.remove_folder(folder)
    except OSError as e:
        _warn_not_deleted(folder, why, e)


def _rotated_out(folder: epath.Path) -> bool:
    """Whether `folder`, in a bucket's checkpoints, is what is left of a rotation's deletion:
    marked so, and no longer a checkpoint (its commit marker gone)."""
    return (folder / _ROTATED_OUT).exists() and not (folder / _commit_marker()).exists()


def _warn_not_deleted(folder: epath.Path, why: str, error: OSError) -> None:
    logging.warning(
        "%s (%s) could not be deleted (%s: %s); delete it yourself",
        folder,
        why,
        error.filename or folder,
        " ".join(str(error.strerror or error).split()),  # (gcsfs's 403 holds two lines.)
    )


def _path_name(path) -> str:
    """'params/Dense_0/kernel': a leaf's path, the same whether the tree is the TrainState
    (attributes) or the dict Orbax's metadata holds (keys)."""
    parts = (getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return "/".join(str(part) for part in parts)


def layout(tree) -> Layout:
    """Each array leaf's shape and dtype, by its path."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


def layout_mismatch(saved: Layout, wanted: Layout) -> str | None:
    """Why a checkpoint of layout `saved` cannot become a state of layout `wanted`, in the
    user's words with the fix; None when it can."""
    if saved.keys() != wanted.keys():
        names = sorted(saved.keys() ^ wanted.keys())
        return f"saved by a model of other shapes (arrays {', '.join(names[:4])} differ)"
    for name, (shape, dtype) in wanted.items():
        saved_shape, saved_dtype = saved[name]
        if saved_shape != shape:
            return f"saved by a model of other shapes ({name} is {saved_shape}, not {shape})"
        if saved_dtype != dtype:
            cause = (
                "JAX_ENABLE_X64 is not what it was when the run saved it"
                if {saved_dtype[-2:], dtype[-2:]} == {"32", "64"}
                else "another compute or parameter dtype"
            )
            return f"saved with {name} as {saved_dtype}, this process builds {dtype} ({cause})"
    return None


def _unwritable(folder: epath.Path) -> str | None:
    """Why this process cannot write a file into `folder` (made again if it was removed, as
    Orbax would), in one line; None when it can. An object store is not probed: it answers
    permissions per bucket, and has no files standing where a folder should."""
    if files.is_remote(folder):
        return None
    try:
        found = files.kind(folder)
        if found not in (None, "a folder"):
            return f"is {found}, not a folder"
        files.write_probe(folder)
    except OSError as e:
        return errors.os_error_line(e) or f"cannot be written ({e})"
    return None


class CheckpointStore:
    """The run's checkpoints: one per saved epoch, the newest `keep` of them kept.

    The older ones are deleted here, by process 0, once the newer are written (before the
    next save and at `close`), not by Orbax: its rotation runs in its save thread, where a
    checkpoint it cannot delete (a read-only part) ends the run in a traceback, half deleted.
    Here each is first taken out of Orbax's sight in one step (`_take_out_of_sight`); what
    cannot be deleted is named in a warning, and the run goes on (the next start tries again).

    Read-only (for evaluation and notebooks), it neither saves, deletes nor moves anything:
    an unreadable checkpoint is skipped, not set aside, and unfinished saves stay in place.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        keep: int,
        read_only: bool = False,
        needs: tuple[str, ...] = (),
    ):
        self.workdir = workdir_path(workdir, "read" if read_only else "save")
        self.read_only = read_only
        self.needs = needs  # What the reader takes from each checkpoint's meta.
        self.keep = keep
        self._manager = None
        self._saved = False  # Whether this store has saved: rotation follows a save only.
        _quiet_missing_metadata()
        _refuse_checkpoints_of_another_run(self.workdir)
        if not read_only:
            _check_path_room(self.workdir)
            self._remove_unfinished_saves()
            (self.workdir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        # A handle of the folder, which tells it moved away (a run split in two) from removed
        # (made again by the next save, as before).
        self._handle = None
        if not (read_only or files.is_remote(self.workdir)):
            with contextlib.suppress(OSError):
                folder = os.fspath(self.workdir / CHECKPOINT_DIR)
                self._handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        if jax.process_count() > 1:
            # Making Orbax's manager is a barrier of every process: each makes it here, at
            # the same point, rather than when it alone finds checkpoints (while process 0
            # clears a killed save's leftovers, the others may still see them).
            self._manager = self._new_manager()

    @property
    def manager(self):
        """Orbax's manager of the checkpoints, made at its first use (see ORBAX)."""
        if self._manager is None:
            self._manager = self._new_manager()
        return self._manager

    def _new_manager(self):
        _check_checkpoint_metadata(self.workdir / CHECKPOINT_DIR)
        ocp = importlib.import_module(ORBAX)
        return ocp.CheckpointManager(
            self.workdir / CHECKPOINT_DIR,
            # Named handlers let the saved arrays' metadata be read without restoring them.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
            # Orbax deletes nothing (see the class); read-only, no folder is created, and this
            # class never saves (Orbax's own read_only option warns on every use).
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=not self.read_only),
        )

    def saved_epochs(self) -> list[int]:
        """The epochs that have a (complete) checkpoint, oldest first."""
        folder = self.workdir / CHECKPOINT_DIR
        # A file or a link loop standing there is named, not taken for "nothing saved".
        if self._manager is None and not (
            files.require_kind(folder, "a folder") and any(folder.iterdir())
        ):
            return []  # Nothing saved yet: no need of Orbax.
        _check_checkpoint_metadata(folder)
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def _remove_unfinished_saves(self) -> None:
        """Deletes the temporary folders of saves a kill interrupted. Done here, synchronously,
        rather than by Orbax's cleanup_tmp_directories, whose background thread can outlive a
        run that fails fast and then log errors at interpreter shutdown."""
        if jax.process_index() == 0:
            checkpoints = self.workdir / CHECKPOINT_DIR
            if checkpoints.exists():
                # Listed, not globbed: a glob of the path would take the workdir's own name
                # for a pattern, and delete in the runs beside it whose names it matched.
                for leftover in checkpoints.iterdir():
                    if _UNFINISHED in leftover.name:
                        _delete(leftover, "the leftover of an unfinished or rotated-out save")
                if files.is_remote(checkpoints):
                    for leftover in checkpoints.iterdir():
                        if leftover.name.isdigit() and _rotated_out(leftover):
                            _delete(leftover, "the leftover of a rotated-out checkpoint")

    def refuse_what_stands_where_it_saves(self, epochs: range) -> None:
        """Refuses, before a run trains, anything at the name of a checkpoint it may save
        (`epochs`): a file or a folder a user put there, or a link to a disk not mounted.
        Found at the save, an epoch was trained and lost, said to be "made while this run
        trained"; a link that leads nowhere failed the save in Orbax's threads, in 103
        lines (trial 12).

        Raises:
          UserError: naming the first such entry; nothing was written over it.
        """
        folder = self.workdir / CHECKPOINT_DIR
        if files.is_remote(folder):  # A bucket's saves are written in place.
            return
        with os.scandir(folder) as entries:
            standing = sorted(int(e.name) for e in entries if e.name.isdigit())
        epoch = next((e for e in standing if e in epochs), None)
        if not parallel.max_over_processes(int(epoch is not None)):  # Every process refuses.
            return
        path = folder / str(epoch)
        raise UserError(
            f"{path}: {_what_stands(path)} stands where this run saves epoch {epoch}; nothing "
            "was trained or written over it: move it away, then rerun"
            if epoch is not None
            else f"{folder}: another process of this run finds something where it saves; its "
            "own line says what"
        )

    def save(self, state: steps.TrainState, extra_meta: dict) -> None:
        """Saves `state` (one unreplicated copy) under its epoch number, asynchronously
        (never in a read-only store).

        Args:
          state: the train state.
          extra_meta: JSON-able facts saved beside it; "steps_per_epoch" (the schedule's
            unit) is required, so that `restore_workdir` rebuilds the run's optimiser.
        """
        assert not self.read_only, "a read-only store never saves"
        epoch = first_value(state.epoch)
        if moved := self._moved_line():  # Orbax would make a new one: the run split in two.
            raise UserError(moved)
        self._finish_saving()
        self._check_room(state, epoch)
        meta = {"epoch": epoch, "step": first_value(state.step), **extra_meta}
        meta["state_fingerprint"] = fingerprint(state)
        # Locally a save is renamed into place: a folder made there meanwhile (by hand, or by
        # another program) failed the rename in Orbax's thread, or raised its cached
        # listing's StepAlreadyExistsError. In a bucket a save is written in place, over
        # what a killed one left there, which the next run's save takes over.
        target = self.workdir / CHECKPOINT_DIR / str(epoch)
        made = not files.is_remote(target) and os.path.lexists(target)  # A link too.
        if parallel.max_over_processes(int(made)):  # Every process refuses.
            raise UserError(
                f"{target}: made while this run trained (by another program, or by hand) where "
                f"it saves epoch {epoch}; nothing was written over it: move it away, then rerun "
                "the same command to resume"
            )
        ocp = importlib.import_module(ORBAX)
        with self._moved_is_one_line():
            self.manager.save(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
        self._saved = True

    @contextlib.contextmanager
    def _moved_is_one_line(self):
        """Names a save's failure where the checkpoints' folder was moved away while it wrote
        (the workdir moved mid-run): Orbax's own errors, as many as its threads, ended in a
        traceback."""
        try:
            yield
        except Exception:
            moved = self._moved_line()
            if moved is None:
                raise
            raise UserError(moved) from None

    def _moved_line(self) -> str | None:
        """The line of a run whose checkpoints' folder was moved away since the store made it
        (local, writable stores), or None."""
        if self._handle is None:
            return None
        folder, held = self.workdir / CHECKPOINT_DIR, os.fstat(self._handle)
        if files.identity(folder) == (held.st_dev, held.st_ino) or held.st_nlink == 0:
            return None  # Still there, or removed: nothing of the run is elsewhere.
        return (
            f"{folder}: moved while this run saved into it; the save in flight is lost, and "
            "what was saved before went with the folder: put it back (or rerun on the "
            "workdir where it is now) to resume"
        )

    def _finish_saving(self, rotate: bool = True) -> None:
        """Waits for the save in flight, if any, then (with `rotate`) deletes the checkpoints
        older than the newest `keep` (process 0; see the class)."""
        if self._manager is None:
            return  # Nothing saved or read by this store: nothing new to rotate.
        with self._moved_is_one_line():
            self.manager.wait_until_finished()
        # A run refused before it saved deletes nothing (one refused for another config
        # deleted the checkpoints past its own `keep`), and only whole checkpoints count
        # towards the newest kept (a folder made by hand took the place of the last good one).
        if jax.process_index() != 0 or not self._saved or not rotate:
            return
        if self._moved_line():
            return  # Moved away: what stands at its name now is not this run's to rotate.
        folder = self.workdir / CHECKPOINT_DIR
        saved = [epoch for epoch in self.saved_epochs() if not _missing_items(folder / str(epoch))]
        for epoch in saved[: max(len(saved) - self.keep, 0)]:
            folder = self.workdir / CHECKPOINT_DIR / str(epoch)
            why = f"checkpoint {epoch}, older than the newest {self.keep}, which are kept"
            try:
                folder = _take_out_of_sight(folder, epoch)
            except OSError as e:
                _warn_not_deleted(folder, why, e)
                continue
            _delete(folder, why)
        self.manager.reload()

    def _saved_layout(self, epoch: int) -> Layout | None:
        """The saved state's layout from Orbax's metadata; None when that cannot be read (the
        checkpoint is then judged by restoring it)."""
        try:
            return layout(self.manager.item_metadata(epoch)["state"].tree)
        except Exception:  # noqa: BLE001  (damaged metadata: the restore decides)
            return None

    def check_room_to_save(self, abstract_state) -> None:
        """Refuses, before a run trains, a checkpoints/ that cannot take one checkpoint: a
        limit on the size of a file this process writes (`ulimit -f`) that its files would
        pass, or too little free space (a run trained an epoch, then refused to save it).
        `_check_room` checks again at each save.

        Raises:
          UserError: naming the limit or the space, and the fix.
        """
        folder = self.workdir / CHECKPOINT_DIR
        problem = fix = None
        if not files.is_remote(folder):
            if problem := _file_size_limit_problem(abstract_state):
                fix = "raise it (`ulimit -f unlimited`) and rerun"
            elif problem := self._space_shortage(abstract_state, "a checkpoint"):
                fix = "free space there, or use another --workdir"
        if not parallel.max_over_processes(int(problem is not None)):
            return
        if problem is None:
            problem = "another process of this run cannot save a checkpoint there"
            fix = "its own line says why; mend that, then rerun"
        raise UserError(f"{folder}: {problem}; {fix}")

    def _check_room(self, state, epoch: int) -> None:
        """Refuses a save that checkpoints/ cannot take (this process cannot write a file
        there, or the file system holding it lacks the bytes or the files), before any of it
        is written: a save that fails in Orbax's threads logs hundreds of lines first. Every
        process refuses if any does, so none is left waiting in the save for the others.
        Remote file systems are neither probed nor measured."""
        folder = self.workdir / CHECKPOINT_DIR
        problem, fix = _unwritable(folder), "mend that, then rerun to resume"
        if problem is None and not files.is_remote(folder):
            problem = _file_size_limit_problem(state, epoch)
            fix = "raise it (`ulimit -f unlimited`), then rerun to resume"
        if problem is None:
            problem = self._space_shortage(state, f"the checkpoint of epoch {epoch}")
            fix = (
                f"free space there (older folders of {folder} may go, the newest kept), then "
                "rerun to resume"
            )
        if not parallel.max_over_processes(int(problem is not None)):
            return
        saved = self.saved_epochs()
        before = f"the last saved is epoch {saved[-1]}" if saved else "none is"
        raise UserError(
            f"{folder}: "
            f"{problem or f'another process cannot save the checkpoint of epoch {epoch}'}; it "
            f"was not saved ({before}); {fix}"
        )

    def _space_shortage(self, state, what: str) -> str | None:
        """What the file system holding checkpoints/ lacks for `what` (a save of `state`), if
        anything."""
        state_bytes = parallel.nbytes(state)
        needed = state_bytes * (1 + _SAVE_OVERHEAD_FRACTION) + _SAVE_OVERHEAD_BYTES
        try:
            stats = os.statvfs(os.fspath(self.workdir / CHECKPOINT_DIR))
        except (OSError, TypeError, ValueError):  # Remote: not measured.
            return None
        if stats.f_bavail * stats.f_frsize < needed:
            return (
                f"the file system holding it has {stats.f_bavail * stats.f_frsize / 2**20:.1f} "
                f"MB free, and {what} needs about {needed / 2**20:.1f} MB"
            )
        if stats.f_files and stats.f_favail < _SAVE_FILES:
            return (
                f"the file system holding it can hold {stats.f_favail} more files, and "
                f"{what} needs about {_SAVE_FILES}"
            )
        return None

    def _restore(self, epoch: int, abstract_state):
        ocp = importlib.import_module(ORBAX)
        restored = self.manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored["state"], restored["meta"]
        saved = meta.get("state_fingerprint") if isinstance(meta, dict) else None
        if saved is None:  # Every save writes it: the meta file was changed since.
            raise Damaged("its meta holds no fingerprint of the state")
        if fingerprint(state) != saved:
            raise Damaged("the state does not match the fingerprint saved with it")
        # The fingerprint is the state's: the meta file is checked for what its readers
        # index (an edited one was a KeyError or a TypeError in restore_workdir; trial 12).
        if missing := [key for key in self.needs if key not in meta]:
            raise Damaged(f"its meta holds no {missing[0]}")
        for key, (low, high) in _META_RANGES.items():
            value = meta.get(key, low)
            if not (
                isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
            ):
                raise Damaged(f"its meta's {key} is {value!r}, not a whole number in {low}..{high}")
        return state, meta

    def _check_readable(self, epoch: int) -> None:
        """Proves that this process can read every file of a checkpoint that failed to load
        (so that its failure is its bytes', not the environment's: permissions, a limit on
        open files, a failing disk).

        Raises:
          UserError: a file cannot be read; nothing was moved.
        """
        folder = self.workdir / CHECKPOINT_DIR / str(epoch)
        try:
            for path in files.walk_files(folder):
                files.read_bytes(path)
        except OSError as e:
            if errors.cloud_storage_line(e) is not None:  # The bucket's fault: its own line.
                raise
            line = errors.os_error_line(e) or f"{e.filename or folder}: {e}"
            raise UserError(
                f"checkpoint {folder} cannot be read by this process ({line}); nothing was "
                "moved; mend that and rerun"
            ) from None

    def _set_aside(self, epoch: int) -> epath.Path:
        """Moves a damaged checkpoint out of Orbax's way, keeping it for inspection."""
        source = self.workdir / CHECKPOINT_DIR / str(epoch)
        target = self.workdir / UNREADABLE_DIR / f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
        # A name already taken (a clock set back, an earlier set-aside in the same second)
        # ended in "a file: File exists" (trial 12): the next free one.
        taken = 1
        while _taken(target if taken == 1 else epath.Path(f"{target}-{taken}")):
            taken += 1
        target = target if taken == 1 else epath.Path(f"{target}-{taken}")
        if jax.process_index() == 0 and source.exists():
            files.move_folder(source, target)
        self.manager.reload()
        return target

    def set_aside_epochs(self) -> list[str]:
        """The checkpoints set aside as damaged (folders of WORKDIR/checkpoints_unreadable)."""
        folder = self.workdir / UNREADABLE_DIR
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def restore_latest(self, abstract_state) -> tuple[steps.TrainState, dict] | None:
        """The newest readable checkpoint's state and meta, or None when there is none.

        A checkpoint is set aside (moved to WORKDIR/checkpoints_unreadable, with a warning;
        skipped when read-only) only when its own bytes are proven damaged: they were read
        and fail their fingerprint, or Orbax or TensorStore found them truncated, undecodable
        or missing (`damage_evidence`), while this process can read every one of its files.
        Then the next older one is tried. Any other failure (the environment, a library, a
        bug) ends the restore with nothing moved. Read-only, a checkpoint that goes away
        while it is read (a run saving into the workdir rotated it out) sends the restore
        back to a fresh listing.

        Args:
          abstract_state: a TrainState of jax.ShapeDtypeStruct leaves (with shardings).

        Raises:
          UserError: a checkpoint holds arrays of other shapes or dtypes than
            `abstract_state`, or cannot be read by this process (nothing is moved), or
            checkpoints exist but every one is damaged (each set aside).
        """
        for _ in range(_LISTINGS):
            with contextlib.suppress(_Rotated):
                return self._restore_newest(abstract_state)
        raise UserError(
            f"{self.workdir / CHECKPOINT_DIR}: the run saving there replaced every checkpoint "
            f"while it was read ({_LISTINGS} tries); try again, or once that run has stopped"
        )

    def _restore_newest(self, abstract_state) -> tuple[steps.TrainState, dict] | None:
        """`restore_latest` over one listing of the checkpoints.

        Raises:
          _Rotated: read-only, a checkpoint went away while it was read.
        """
        epochs = self._listing()[::-1]
        wanted = layout(abstract_state)
        if epochs:
            _RESTORED_FOLDERS.update(_spellings(self.workdir / CHECKPOINT_DIR))
            _keep_stray_reads_off_stderr()
        for epoch in epochs:
            folder = self.workdir / CHECKPOINT_DIR / str(epoch)
            try:
                found = self._restore_epoch(epoch, folder, wanted, abstract_state)
            except Exception as e:
                if self.read_only and epoch not in self._listing():  # The run saving
                    raise _Rotated(f"{folder} went away while it was read") from e  # there.
                raise
            if found is not None:
                return found
        if epochs:
            where = "skipped" if self.read_only else f"set aside in {self.workdir / UNREADABLE_DIR}"
            raise UserError(
                f"{self.workdir / CHECKPOINT_DIR}: no readable checkpoint, every one is damaged "
                f"(epochs {epochs}, {where}); a training rerun will start afresh, or use a new "
                "--workdir"
            )
        return None

    def _listing(self) -> list[int]:
        """`saved_epochs`, where a read-only listing that met a checkpoint going away is
        _Rotated: Orbax reads each checkpoint's metadata as it lists them, and one that the run
        saving there rotated out meanwhile (its folder gone, or renamed away) failed an eval,
        a predict or an export now and then, naming a folder that was never the fault.

        Raises:
          _Rotated: read-only, a listed checkpoint's folder went away while it was listed.
        """
        try:
            return self.saved_epochs()
        except (FileNotFoundError, NotADirectoryError) as e:
            if not self.read_only:
                raise
            raise _Rotated(f"{self.workdir / CHECKPOINT_DIR} changed while it was listed") from e

    def _restore_epoch(
        self, epoch: int, folder: epath.Path, wanted: Layout, abstract_state
    ) -> tuple[steps.TrainState, dict] | None:
        """One checkpoint's (state, meta); None where it is damaged (set aside, or skipped)."""
        _check_entries(folder)
        _check_whole(folder)
        # Its descriptions are looked into only to tell why it failed (their format is
        # Orbax's own): a checkpoint that restores is never called damaged by them.
        saved = self._saved_layout(epoch)
        mismatch = saved is not None and layout_mismatch(saved, wanted)
        if mismatch:
            if described := _description_damage(folder):  # An array's entry removed, say.
                return self._damaged(epoch, described)
            raise UserError(
                f"{folder}: {mismatch}; nothing was moved; run it as it was trained (the "
                "same config and environment) or use a new --workdir"
            )
        try:
            state, meta = self._restore(epoch, abstract_state)
        except Exception as e:  # noqa: BLE001  (Orbax and TensorStore raise many kinds)
            reason = errors.first_line(e)
            described = _description_damage(folder)
            if described is None and any(sign in str(e) for sign in _MISMATCH_SIGNS):
                raise UserError(
                    f"{folder}: saved by a model of other shapes ({reason}); use the "
                    "config that trained it or a new --workdir"
                ) from None
            evidence = described or damage_evidence(e, folder)
            if evidence is None:
                self._check_readable(epoch)  # The environment's failure is one line.
                e.add_note(f"restoring {folder}: not known to be damaged; nothing was moved")
                raise
            return self._damaged(epoch, evidence)
        if first_value(state.epoch) != epoch:
            folder, held = self.workdir / CHECKPOINT_DIR, first_value(state.epoch)
            raise UserError(
                f"{folder / str(epoch)}: holds the state after epoch {held}, not {epoch} "
                f"(was the folder renamed?); rename it to {folder / str(held)} or move it "
                "out of that folder"
            )
        return state, meta

    def _damaged(self, epoch: int, evidence: str) -> None:
        """A checkpoint proven damaged by `evidence` once every file of it is readable
        (`_check_readable`: else the environment's failure, one line): skipped read-only,
        set aside otherwise, with a warning either way."""
        self._check_readable(epoch)
        if self.read_only:
            logging.warning("checkpoint %s is damaged (%s); skipped", epoch, evidence)
            return
        target = self._set_aside(epoch)
        logging.warning("checkpoint %s is damaged (%s); moved to %s", epoch, evidence, target)

    def close(self, rotate: bool = True) -> None:
        """Waits for the save in flight, deletes the checkpoints beyond the newest `keep`
        (unless told not to `rotate`: a run that lost its workdir's lock to another), then
        releases the manager."""
        try:
            if self._manager is not None:
                if not self.read_only:
                    self._finish_saving(rotate)
                self.manager.close()
        finally:
            if self._handle is not None:
                os.close(self._handle)
                self._handle = None


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, sharding):
    """The TrainState's shapes and dtypes, placed by `sharding`, without computing it."""
    shapes = jax.eval_shape(lambda: steps.create_train_state(model, tx, 0))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def saved_config_fields(workdir: str | os.PathLike) -> dict:
    """The fields a workdir's config.json holds, checked to be a run's (a JSON object
    naming its model) but not validated against the library or the model.

    Raises:
      UserError: config.json is missing, not valid JSON, or not a run's.
    """
    files.require_kind(files.as_path(workdir), "a folder")  # A file there: one line.
    path = files.as_path(workdir) / CONFIG_FILE
    try:
        saved = json.loads(files.read_text(path))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; is {workdir} a training workdir?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it or retrain") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), str):
        raise _not_a_runs(path, f"a JSON {type(saved).__name__} without the model a run records")
    return saved


def _not_a_runs(path: epath.Path, why: str) -> UserError:
    return UserError(
        f"{path}: not a run's config ({why}); restore the run's own, or use another --workdir"
    )


def runs_checkpoints_holding(
    folder: epath.Path, workdir: epath.Path | None = None
) -> epath.Path | None:
    """The checkpoints folder of a run (`workdir`'s, or any beside a run's config.json) that
    holds `folder`, or None; locally through the links on the way. Its run rotates away, and takes
    for its own, what is put there: an export through a link into one made every later
    training there refuse, and a run's workdir there ended both runs in tracebacks."""
    if not files.is_remote(folder):
        folder = epath.Path(os.path.realpath(folder))
        if workdir is not None:
            workdir = epath.Path(os.path.realpath(workdir))
    own = None if workdir is None else os.fspath(workdir / CHECKPOINT_DIR)
    for holder in (folder, *folder.parents):
        if holder.name != CHECKPOINT_DIR:
            continue
        if os.fspath(holder) == own or _is_a_runs_workdir(holder.parent):
            return holder
    return None


def _refuse_checkpoints_of_another_run(workdir: epath.Path) -> None:
    """Refuses a workdir whose checkpoints folder is, through a link, another run's: it
    resumed from that run's checkpoint without a word, saved into it and rotated away its
    good checkpoints (trial 12). A link to a folder of no run (checkpoints moved to a bigger
    disk) is the run's own.

    Raises:
      UserError: naming the link, the other run and the fix; nothing was read or written.
    """
    link = workdir / CHECKPOINT_DIR
    if files.is_remote(link) or not os.path.islink(link):
        return
    holder = epath.Path(os.path.realpath(link)).parent
    if holder != epath.Path(os.path.realpath(workdir)) and _is_a_runs_workdir(holder):
        raise UserError(
            f"{link}: a link into the workdir of another run ({holder}), whose checkpoints "
            "this run would read, save among and rotate away; nothing was read or written: "
            "give this run a checkpoints folder of its own, or use that run's --workdir"
        )


def _is_a_runs_workdir(folder: epath.Path) -> bool:
    """Whether `folder` holds a run's config.json (another project's is no run's)."""
    if files.kind(folder / CONFIG_FILE) != "a file":
        return False
    try:
        saved_config_fields(folder)
    except UserError:
        return False
    return True


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir; a library field added since the run
    was saved takes its default, which is the behaviour the run had, and one dropped since
    is passed over.

    Raises:
      UserError: config.json is missing, is not a run's (`saved_config_fields`, or holding
        a value of the wrong kind), or names a model that cannot be loaded here (that line
        is the model's own: the file may be fine).
    """
    saved = saved_config_fields(workdir)
    config = ml_collections.ConfigDict({**config_lib.base_config().to_dict(), **saved})
    model_fields = models.model_fields(models.model_class(config))
    known = {field.name for field in config_lib.BASE_FIELDS} | model_fields
    for key in set(config.keys()) - known:
        del config[key]
    try:
        config_lib.validate(config, model_fields)
        models.check_named_choices(config)
    except UserError as e:
        raise _not_a_runs(files.as_path(workdir) / CONFIG_FILE, str(e)) from None
    return config


class Restored(NamedTuple):
    """A trained run: its model, its train state and its config."""

    model: nn.Module
    state: steps.TrainState
    config: ml_collections.ConfigDict


def restore_workdir(workdir: str | os.PathLike) -> Restored:
    """Restores the latest readable checkpoint of a workdir onto the default device.

    For notebooks and `--mode=eval`: no config file is needed, the workdir's own is read.
    Read-only: nothing in the workdir is written, deleted or moved, so a run may be saving
    into it meanwhile.

    Raises:
      UserError: the workdir has no config or no readable checkpoint, or was moved or
        removed while it was read.
    """
    path = files.as_path(workdir)
    parallel.start_devices()  # A JAX_PLATFORMS the machine lacks: one line, not Orbax's.
    identity = None if files.is_remote(path) else files.identity(path)
    try:
        config = read_config(workdir)
        model = models.build_model(config)
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        store = CheckpointStore(workdir, config.keep_checkpoints, read_only=True, needs=RUN_META)
        # The optimiser state's structure does not depend on the schedule's length; the
        # run's own optimiser is rebuilt from the steps per epoch its checkpoint records.
        placeholder_tx = optim.make_optimizer(config, steps_per_epoch=1)
        try:
            restored = store.restore_latest(abstract_train_state(model, placeholder_tx, sharding))
        finally:
            store.close()
        if restored is None:
            raise UserError(f"{path / CHECKPOINT_DIR}: no checkpoint; train first")
    except (UserError, OSError):
        # Its files gone from under the read: "no checkpoint; train first" said otherwise.
        if identity is not None and files.identity(path) != identity:
            raise UserError(
                f"{path}: moved or removed while it was read; nothing in it was changed; "
                "rerun on it where it is now"
            ) from None
        raise
    state, meta = restored
    state = state.replace(tx=optim.make_optimizer(config, meta["steps_per_epoch"]))
    return Restored(model, state, config)
