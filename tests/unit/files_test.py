"""Records a rerun resumes from: written whole or not at all, and read with a one-line error."""

import contextlib
import errno
import fcntl
import os
import re
import signal
import sys
import threading
import time

import pytest
from helpers import kill_mid_write

from mlp_jax import errors, files
from mlp_jax.errors import UserError, os_error_line


def test_a_kill_while_a_record_is_written_leaves_the_last_one_whole(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    files.write_record(path, {"rows": {"recipe": 0.9162}})
    kill_mid_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        files.write_record(path, {"rows": {"recipe": 0.9162, "without MixUp": 0.9110}})
    monkeypatch.undo()
    assert files.read_record(path) == {"rows": {"recipe": 0.9162}}
    files.write_record(path, {"rows": {}})  # The next write replaces the one cut short.
    assert files.read_record(path) == {"rows": {}}


def test_a_record_of_another_kind_is_a_one_line_error_naming_it(tmp_path):
    # A population's cached results are a list, a study's record an object: another kind
    # was a traceback where it was first indexed.
    path = tmp_path / "record.json"
    path.write_text("[]")
    assert files.read_record(path, list) == []
    with pytest.raises(
        UserError,
        match="record.json: the record is a list, not an object: not the record kept there",
    ):
        files.read_record(path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"rows": {}}', "the record lacks 'runs'"),
        ('{"runs": [{"seed": 0}, {}]}', "record['runs'][1] lacks 'seed'"),
        ('{"runs": [{"seed": "0"}]}', "record['runs'][0]['seed'] is a string, not a number"),
        ('{"runs": [{"seed": true}]}', "['seed'] is true or false, not a number"),
        ('{"runs": {"seed": 0}}', "record['runs'] is an object, not a list"),
        ('{"runs": [], "rows": {"a": {"acc": null}}}', "record['rows']['a']['acc'] is null"),
    ],
)
def test_a_record_lacking_what_its_reader_takes_is_one_line_naming_it(tmp_path, text, problem):
    # A study's record edited by hand was a KeyError or TypeError where it was first indexed.
    path = tmp_path / "finals.json"
    path.write_text(text)
    shape = {"runs": [{"seed": int}], "rows": {str: {"acc": float}}}
    with pytest.raises(UserError, match=f"finals.json: .*{re.escape(problem)}.*: not the record"):
        files.read_record(path, shape)
    path.write_text('{"runs": [{"seed": 1, "more": 2}], "rows": {"a": {"acc": 1}}, "x": 3}')
    assert files.read_record(path, shape)["runs"] == [{"seed": 1, "more": 2}]


def test_a_file_of_bytes_that_are_not_text_is_one_line_with_the_fix(tmp_path):
    # metrics.jsonl overwritten with random bytes: the line named no fix.
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1}\n\xff\xfe\x00')
    with pytest.raises(UserError, match=r"metrics.jsonl: not UTF-8 text \(invalid start byte at"):
        files.read_text(files.as_path(path))
    with pytest.raises(UserError, match="restore it, or move it away"):
        files.read_text(files.as_path(path))


def test_a_record_that_is_not_json_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "tune.json"
    assert files.read_record(path) is None
    path.write_text('{"history": [[{"val_acc": 0.91')
    with pytest.raises(UserError, match="tune.json: not valid JSON") as raised:
        files.read_record(path)
    assert "\n" not in str(raised.value) and "delete it" in str(raised.value)


def test_find_file_looks_in_the_folder_then_above_it(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    model = tmp_path / "experiments" / "model.py"
    model.write_text("")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert files.find_file("experiments/model.py") == model
    assert files.find_file(model) == model
    monkeypatch.chdir(tmp_path)
    assert files.find_file("experiments/model.py") == model
    with pytest.raises(UserError, match=r"experiments/other.py: no such file in .*a/b"):
        monkeypatch.chdir(tmp_path / "a" / "b")
        files.find_file("experiments/other.py")
    # An absolute path to what is not a file was "no such file ...; give an absolute path".
    (tmp_path / "folder.py").mkdir()
    os.mkfifo(tmp_path / "pipe.py")
    with pytest.raises(UserError, match=r"folder.py: a folder, not a file; give the file's path"):
        files.find_file(tmp_path / "folder.py")
    with pytest.raises(UserError, match=r"pipe.py: a named pipe \(FIFO\), not a file"):
        files.find_file(tmp_path / "pipe.py")
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(UserError, match=r"a/b: a folder, not a file"):
        files.find_file("b")  # Relative, found where the search starts.


def _full_disk_while_writing(monkeypatch) -> str:
    """The disk full halfway through the write, as TensorStore's and some file systems'
    errors report it: no file named. Returns the error's words."""

    def full(descriptor, data):
        os.write(descriptor, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", full)
    return "No space left on device: "


def _quota_reported_at_close(monkeypatch) -> str:
    """NFS reporting a write it deferred (a full disk, a quota) when the file is closed:
    the old file must still be there when it fails."""
    written, real_dup, real_close = [], os.dup, os.close

    def dup(descriptor):
        written.append(real_dup(descriptor))
        return written[-1]

    def close_reporting_a_full_disk(descriptor):
        real_close(descriptor)
        if written and descriptor == written[0]:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "dup", dup)
    monkeypatch.setattr(os, "close", close_reporting_a_full_disk)
    return "Disk quota exceeded"


@pytest.mark.parametrize("fail", [_full_disk_while_writing, _quota_reported_at_close])
def test_a_failed_write_names_its_path_and_leaves_no_temporary_file(tmp_path, monkeypatch, fail):
    path = tmp_path / "metrics.jsonl"
    path.write_text("the last whole record\n")
    words = fail(monkeypatch)
    with pytest.raises(OSError) as raised:
        files.write_atomically(files.as_path(path), "a new record\n")
    monkeypatch.undo()
    assert os_error_line(raised.value).startswith(f"{path}: {words}")
    assert path.read_text() == "the last whole record\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


@contextlib.contextmanager
def _failing_after(seconds: int):
    """Fails the test, rather than hanging it, when what it runs blocks (opening a pipe)."""

    def blocked(*_):
        raise AssertionError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir], ids=["pipe", "folder"])
def test_a_file_that_is_not_a_file_is_refused_before_it_is_opened(tmp_path, make):
    path = tmp_path / "config.json"
    make(path)
    with _failing_after(5):
        for operation in (files.read_bytes, files.read_text, files.read_record):
            with pytest.raises(UserError, match="config.json is a .* where a file is needed"):
                operation(files.as_path(path))
        with pytest.raises(UserError, match="where a file is needed"):
            files.write_atomically(files.as_path(path), "{}")


def test_what_stands_at_a_writes_temporary_name_is_refused_and_left(tmp_path):
    # A pipe there blocked the run for ever, deaf to SIGTERM; a link there had its target
    # written (and, the write failing, removed).
    path, tmp = tmp_path / "metrics.jsonl", tmp_path / ".metrics.jsonl.tmp"
    users = tmp_path / "users_file"
    users.write_text("the user's\n")
    links = (lambda p: os.symlink(users, p), lambda p: os.symlink(tmp_path, p))
    for make in (os.mkfifo, *links, lambda p: os.link(users, p)):  # (A hard link: emptied.)
        make(tmp)
        with _failing_after(5), pytest.raises(UserError, match=r"\.metrics\.jsonl\.tmp"):
            files.write_atomically(files.as_path(path), "a record\n")
        assert os.path.lexists(tmp) and not path.exists()
        os.remove(tmp)
    assert users.read_text() == "the user's\n"
    tmp.write_text("half a record")  # A write cut short: its own leftover, written over.
    files.write_atomically(files.as_path(path), "a record\n")
    assert path.read_text() == "a record\n" and not tmp.exists()


def test_a_temporary_file_another_user_owns_is_made_afresh(tmp_path, monkeypatch):
    # Planted in a shared folder, or a write of ours cut short on an NFS export that squashes
    # root to nobody: taken over, the result was that user's (and refusing every file the
    # file system said another owned refused every write on such an export).
    path, tmp = tmp_path / "results.json", tmp_path / ".results.json.tmp"
    tmp.write_text("planted")
    owner = os.stat(tmp).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # This process, another user.
    made = []
    real_open = os.open

    def record(name, flags, *args):
        made.append(bool(flags & os.O_EXCL) and str(name) == str(tmp))
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", record)
    files.write_atomically(files.as_path(path), "{}\n")
    assert path.read_text() == "{}\n" and not tmp.exists()
    assert made[-1]  # Renamed into place: a file this write made, not the planted one.
    # In a sticky shared folder only its owner may remove it: one line, and it is left.
    tmp.write_text("planted")

    def refused(name):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(name))

    monkeypatch.setattr(os, "remove", refused)
    with pytest.raises(
        UserError, match=rf"\.results\.json\.tmp: a file of another user \(uid {owner}\)"
    ):
        files.write_atomically(files.as_path(path), "[]\n")
    monkeypatch.undo()
    assert tmp.read_text() == "planted" and path.read_text() == "{}\n"


def _another_writer_midway(tmp) -> int:
    """The descriptor of `tmp` as another process holds it while it writes: locked, half
    written."""
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.write(descriptor, b'{"epoch": 1, "train_lo')
    return descriptor


def test_two_writers_of_one_file_take_turns(tmp_path):
    # One temporary name per file: the second writer emptied and wrote the first's file,
    # which the first then renamed into place, half of each.
    path, tmp = tmp_path / "results.json", tmp_path / ".results.json.tmp"
    other = _another_writer_midway(tmp)
    raised = []

    def write_mine():
        try:
            files.write_atomically(files.as_path(path), "mine\n")
        except BaseException as e:  # noqa: BLE001  (reported by the test's thread)
            raised.append(e)

    mine = threading.Thread(target=write_mine)
    mine.start()
    time.sleep(0.5)
    assert mine.is_alive() and tmp.read_bytes() == b'{"epoch": 1, "train_lo'
    os.write(other, b'ss": 0.5}\n')  # The other ends its write and renames its file in place.
    os.rename(tmp, path)
    theirs = os.fstat(other).st_ino
    os.close(other)
    mine.join(10)
    assert not mine.is_alive() and not raised, raised
    # A file of its own, renamed over theirs: not written into theirs, which `path` named.
    assert path.read_text() == "mine\n" and os.stat(path).st_ino != theirs
    assert not tmp.exists()


def test_a_file_system_without_locks_is_written_unlocked(tmp_path, monkeypatch):
    # Lustre's default mount, NFS without its lock daemon: every write failed there.
    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    path = tmp_path / "config.json"
    files.write_atomically(files.as_path(path), "{}\n")
    assert path.read_text() == "{}\n" and not (tmp_path / ".config.json.tmp").exists()


def test_a_writer_that_never_lets_go_is_one_line_after_a_while(tmp_path, monkeypatch):
    path, tmp = tmp_path / "results.json", tmp_path / ".results.json.tmp"
    path.write_text("the last whole record\n")
    other = _another_writer_midway(tmp)
    monkeypatch.setattr(files, "TEMPORARY_WAIT_SECONDS", 0.3)
    with pytest.raises(UserError, match=r"\.results\.json\.tmp: another process has been writ"):
        files.write_atomically(files.as_path(path), "mine\n")
    os.close(other)
    assert path.read_text() == "the last whole record\n"
    assert tmp.read_bytes() == b'{"epoch": 1, "train_lo'  # The other's, untouched.


def test_a_folder_moved_to_another_file_system_is_copied_then_removed(tmp_path, monkeypatch):
    source, target = tmp_path / "checkpoints" / "3", tmp_path / "aside" / "3"
    (source / "state").mkdir(parents=True)
    (source / "state" / "data").write_bytes(b"damaged bytes")
    source, target = files.as_path(source), files.as_path(target)

    def cross_device(self, _target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fspath(self))

    monkeypatch.setattr(type(source), "rename", cross_device)
    files.move_folder(source, target)
    assert not source.exists()
    assert (target / "state" / "data").read_bytes() == b"damaged bytes"


# What gcsfs raises for a bucket's HTTP 403: an OSError with neither an errno nor a file name,
# the JSON API's path on its first line and GCS's words on the second.
_GCS_SAYS = "me@p.iam.gserviceaccount.com does not have storage.objects.get access."


def test_a_buckets_refusal_is_one_line_naming_the_object_the_account_and_the_fix(monkeypatch):
    monkeypatch.setitem(errors._PATH_FLAGS, "gs://bucket/run", "--workdir")
    fix = "give that account this access to the bucket, or use another --workdir"
    refused = OSError(f"Forbidden: b/bucket/o/run%2Fmetrics.jsonl\n{_GCS_SAYS}")
    assert os_error_line(refused) == (
        f"gs://bucket/run/metrics.jsonl: Forbidden: {_GCS_SAYS}: {fix}"
    )
    # The bucket itself refused, GCS's words missing: the bucket named, no empty part.
    assert os_error_line(OSError("Forbidden: b/other")) == (
        "gs://other: Forbidden: give that account this access to the bucket, or use another path"
    )
    # A listing's names no object: the path asked for names it, its message kept.
    run = files.as_path("gs://bucket/run")

    def listing_refused(self, *args, **kwargs):
        raise OSError(f"Forbidden: b/bucket/o\n{_GCS_SAYS}")

    monkeypatch.setattr(type(run), "stat", listing_refused)
    with pytest.raises(OSError) as raised:
        files.kind(run)
    assert os_error_line(raised.value) == f"gs://bucket/run: Forbidden: {_GCS_SAYS}: {fix}"


def test_a_remote_error_raised_with_a_message_alone_keeps_it_when_named(monkeypatch):
    import aiohttp  # noqa: PLC0415  (gcsfs's client)

    run = files.as_path("gs://bucket/run")

    def timed_out(self, *args, **kwargs):
        raise aiohttp.ServerTimeoutError("Timeout on reading data from socket")

    monkeypatch.setattr(type(run), "stat", timed_out)
    with pytest.raises(OSError) as raised:
        files.kind(run)
    assert raised.value.filename == "gs://bucket/run"
    assert errors.cloud_storage_line(raised.value).startswith(
        "gs://bucket/run: no connection to Cloud Storage through every retry (Timeout on "
        "reading data from socket); "
    )


@pytest.mark.parametrize("uri", ["gs://", "gs:///run", "gs://Bad_Bucket!/run", "gs://ab/run"])
def test_a_bucket_path_without_a_bucket_name_is_refused_before_any_request(uri):
    # Each was retried for half a minute, then a traceback.
    with pytest.raises(UserError, match="is not a bucket name; give gs://BUCKET/PATH"):
        files._check_bucket_name(uri)
    files._check_bucket_name("gs://my-bucket_1.x/run")


@pytest.mark.parametrize("uri", ["gs://bucket/runs/z#a", "gs://bucket/runs/w?x"])
def test_a_bucket_path_tensorstore_would_cut_is_refused(uri):
    # Cut there, two runs' arrays were written to one place outside both workdirs, each
    # run's checkpoints then failing their fingerprints and set aside: a run lost.
    with pytest.raises(UserError, match="in a bucket path, where TensorStore would cut"):
        files.as_path(uri)


@pytest.mark.parametrize(
    "uri, fix",
    [
        ("file:///tmp/run", r"give it without file:// \(/tmp/run\), or a local path"),
        ("http://host/data", "give a local path or gs://, s3://"),
        ("memory://run", "give a local path or gs://"),
    ],
)
def test_a_uri_of_a_scheme_no_path_takes_is_one_line(uri, fix):
    # etils.epath knows none of them: every command ended in its KeyError's traceback.
    with pytest.raises(UserError, match=f"{uri}: .* paths are not read here; {fix}"):
        files.as_path(uri)


def test_a_name_of_bytes_no_locale_makes_utf8_says_to_rename_it(tmp_path):
    # Under a UTF-8 locale, "run with LANG=C.UTF-8" was the fix given, which changes nothing.
    name = os.fsdecode(os.fsencode(tmp_path) + b"/bad\xffname")
    assert sys.getfilesystemencoding() == "utf-8"
    with pytest.raises(UserError, match="holds bytes that are not UTF-8.*rename it"):
        files.as_path(name)


def test_a_path_of_bytes_is_a_type_error_saying_what_a_path_is(tmp_path):
    # From Python: `a bytes-like object is required, not 'str'`, raised deep inside.
    with pytest.raises(TypeError, match="a path is a str or a pathlib.Path, not bytes"):
        files.as_path(os.fsencode(tmp_path))
    assert files.as_path(tmp_path) == files.as_path(str(tmp_path))


def test_a_pipe_made_after_its_kind_was_asked_is_never_opened_as_a_file(tmp_path, monkeypatch):
    # Opened for reading and writing, a pipe does not wait: it was returned as the lock.
    os.mkfifo(tmp_path / ".lock")
    monkeypatch.setattr(files, "require_kind", lambda *args, **kwargs: False)  # Asked before.
    with pytest.raises(UserError, match="a link or a pipe where this command writes its lock"):
        files.open_one_name(files.as_path(tmp_path / ".lock"), "its lock", access=os.O_RDWR)


def test_an_empty_home_names_no_home_folder(monkeypatch):
    # Python takes an empty HOME for "/": the caches of `HOME= make train` went to /.cache
    # (55 MB there, trial 13). The caches pass over it; a path a user gave is one line.
    monkeypatch.setenv("HOME", "")
    assert files.expand_home("~/.cache/mlp_jax/idx") is None
    assert files.expand_home("/data/~x") == "/data/~x"
    with pytest.raises(UserError, match="~/run: names a home folder this process has none of"):
        files.as_path("~/run")
    monkeypatch.setenv("HOME", "/home/someone")
    assert files.expand_home("~/x") == "/home/someone/x"
