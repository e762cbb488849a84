"""Fixtures both tiers share: synthetic IDX folders, the real dataset, and one compilation
cache and one cache of inflated IDX files for the session (helpers live in
tests/helpers.py)."""

import contextlib
import gc
import os
import shutil
import signal
import tempfile

import jax
import pytest
from helpers import FULL_SIZES, QUICK_COMPILE_XLA_FLAGS, SMALL_SIZES, write_synthetic_dataset

from mlp_jax import data, signals

_CACHE = pytest.StashKey[str]()
LASTING_CACHE_BYTES = 512 * 2**20


def pytest_addoption(parser):
    """--quick-compile: XLA's CPU back end compiles without optimising (the Makefile's unit
    tier; see helpers.QUICK_COMPILE_XLA_FLAGS)."""
    parser.addoption(
        "--quick-compile",
        action="store_true",
        help="compile for the CPU without optimising: tiny programs each run once",
    )


def pytest_configure(config):
    """With --quick-compile, XLA's quick flags, before any device is made (JAX reads XLA_FLAGS
    then), for this process and the commands it starts.

    One persistent compilation cache for the session, set before anything is collected
    (JAX decides at its first compilation whether to use one), in-process and for every
    command the tests start: a program compiled once (the same tiny model in many tests) is
    not compiled again.

    Fresh each session, so that no test sees another session's programs, unless
    $MLP_JAX_TEST_XLA_CACHE names a folder that lasts: `make test` does, so that a rerun
    after a change compiles only the programs the change altered. That is safe because a
    program's key is its whole HLO, compile options, XLA flags and JAX version: a changed
    program is never served an old one."""
    if config.getoption("quick_compile") and QUICK_COMPILE_XLA_FLAGS not in os.environ.get(
        "XLA_FLAGS", ""
    ):
        os.environ["XLA_FLAGS"] = f"{QUICK_COMPILE_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}"
    lasting = os.environ.get("MLP_JAX_TEST_XLA_CACHE")
    if lasting:
        # Programs of old code pile up there: past this size it starts afresh (the tier
        # writes about 15 MB). JAX's own size limit would do it entry by entry, at three
        # times the tier's time. Only JAX's entries are removed: the variable may name a
        # folder that holds other files too.
        os.makedirs(lasting, exist_ok=True)
        entries = _cache_entries(lasting)
        if sum(entry.stat().st_size for entry in entries) > LASTING_CACHE_BYTES:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
    session = tempfile.mkdtemp(prefix="mlp_jax_test_xla_cache_")
    config.stash[_CACHE] = session
    path = lasting or session
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    os.environ["MLP_JAX_COMPILATION_CACHE"] = path
    # The inflated IDX files in the session's folder: nothing of the user's cache is read.
    os.environ[data.CACHE_ENV_VAR] = os.path.join(session, "idx")
    # Implicit rank promotion (an (N,) array met by an (N, 1) one broadcasts to (N, N)) is
    # an error, here and in every command the tests start: a shape bug fails loudly instead
    # of averaging the wrong matrix. The library broadcasts explicitly where it means to.
    jax.config.update("jax_numpy_rank_promotion", "raise")
    os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
    _start_commands_with_default_signals()


# Seconds each file's tests took on one of two workers (2-core Xeon, 2026-12-07; the fast
# tier's files less the whole runs it leaves out). With several workers (the Makefile's
# `--dist loadfile --no-loadscope-reorder`) the files are handed out longest first, so that
# no long file is left to run alone at the end: in pytest-xdist's own order, most tests
# first, the full tier's one-test pod slice (47 s) ran last beside an idle worker. A file
# missing here counts as short; a stale figure costs only time.
FILE_SECONDS = {
    # The full tier.
    "gcs_test.py": 89,
    "benchmarks_cli_test.py": 87,
    "cli_test.py": 77,
    "studies_test.py": 67,
    "invariants_test.py": 60,
    "checkpointing_cli_test.py": 59,
    "tpu_vm_test.py": 47,
    "multidevice_test.py": 40,
    "predict_export_test.py": 29,
    "multidevice_sweep_test.py": 26,
    "real_data_test.py": 20,
    "compiled_as_users_test.py": 17,
    "notebook_test.py": 15,
    # The fast tier.
    "checkpointing_test.py": 24,
    "steps_test.py": 16,
    "loop_test.py": 16,
    "errors_test.py": 10,
    "sweep_test.py": 8,
    "augment_test.py": 5,
    "nnx_models_test.py": 4,
    "mutations_test.py": 4,
}


def pytest_collection_modifyitems(items):
    """Orders the files longest first (FILE_SECONDS), each file's tests kept in their order."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


def _ignore(_signal_number, _frame) -> None:
    """Ignores a signal, but unlike SIG_IGN is not inherited: exec resets it to the default."""


def _start_commands_with_default_signals() -> None:
    """Makes the commands the tests start receive every terminating signal as from a
    terminal, however the tests were started: a background job of a shell without job
    control ignores SIGINT and SIGQUIT, `nohup` SIGHUP, and a command keeps a signal its
    parent ignored (as `nohup make train` must), so the stop tests would find it ignored. The
    test process itself still ignores them."""
    for number in signals.TERMINATING:
        if signal.getsignal(number) == signal.SIG_IGN:
            signal.signal(number, _ignore)


def _cache_entries(folder: str) -> list[os.DirEntry]:
    """The files JAX's compilation cache wrote directly in `folder` (NAME-KEY-cache, and
    NAME-KEY-atime where it counts their use)."""
    return [
        entry
        for entry in os.scandir(folder)
        if entry.is_file(follow_symlinks=False) and entry.name.endswith(("-cache", "-atime"))
    ]


def pytest_unconfigure(config):
    """Removes the session's folder (a lasting cache stays), and spares each test process's
    exit the garbage collector's last pass over a session's heap (as `mlp_jax.errors.command`
    spares a command's): a second off every run of a tier."""
    shutil.rmtree(config.stash[_CACHE], ignore_errors=True)
    gc.freeze()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A folder of small synthetic IDX files (6,000 training and 1,000 test images)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), SMALL_SIZES)


@pytest.fixture(scope="session")
def synthetic_full_dir(tmp_path_factory):
    """A folder of full-size synthetic IDX files (60,000 / 10,000): for runs that must last
    long enough to be signalled, and for sizes the real dataset has."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic_full"), FULL_SIZES)


@pytest.fixture(scope="session")
def real_data_dir():
    """The real dataset (CI installs Debian's dataset-fashion-mnist); fails if absent."""
    for _, directory in data.candidate_dirs():
        if data.has_idx_files(directory):
            return directory
    pytest.fail(
        "real Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` or set "
        f"{data.ENV_VAR}; these tests do not skip"
    )
