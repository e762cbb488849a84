"""The command line end to end, and its one-line errors."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import (
    FULL_SIZES,
    ROOT,
    SYNTHETIC_LABEL_NOISE,
    TINY,
    TRAINED_EPOCHS,
    assert_one_line_error,
    run_cli,
    start_cli,
    without_tensorflow_env,
)

from mlp_jax import data


def test_train_then_eval_end_to_end(trained_workdir):
    workdir, result = trained_workdir
    assert TRAINED_EPOCHS == 2
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 2
    for field in ("train_loss", "val_loss", "val_acc", "examples/s"):
        assert field in epoch_lines[-1]

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "val_loss", "val_acc", "examples_per_sec"):
        assert all(isinstance(r[key], float) for r in records)
    # Learnt, but far from perfect: the synthetic labels are noisy (see conftest).
    assert 0.5 < records[-1]["val_acc"] < 1 - SYNTHETIC_LABEL_NOISE + 0.02
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_hiddens"] == 32 and config["model"] == "experiments/mlp_concise.py:MLP"
    assert (workdir / "curves.png").stat().st_size > 10_000
    assert list(workdir.glob("events.out.tfevents.*"))
    assert (workdir / "checkpoints" / "2").is_dir()

    evaluated = run_cli("--mode=eval", f"--workdir={workdir}")
    assert evaluated.returncode == 0, evaluated.stderr
    line = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert line["epoch"] == 2 and line["step"] == 2 * -(-FULL_SIZES["train"] // 256) == 2 * 235
    assert line["test_acc"] == pytest.approx(records[-1]["val_acc"], abs=1e-6)
    assert line["test_loss"] == pytest.approx(records[-1]["val_loss"], rel=1e-5)
    assert len(line["params_fingerprint"]) == 64


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--config.nonexistent_key=1"], ["nonexistent_key"]),
        (["--config.num_hidden=5"], ["unknown config key 'num_hidden'", "'num_hiddens'"]),
        (["--config.lr=0"], ["config.lr=0.0 is invalid"]),
        (["--config.batch_size=0"], ["config.batch_size=0 is invalid"]),
        (["--config.num_hiddens=0"], ["config.num_hiddens=0 is invalid"]),
        (["--config.num_epochs=-1"], ["config.num_epochs=-1 is invalid"]),
        (["--config.lr=abc"], ["lr"]),
        (["--config.model.x=1"], ["--config.model.x: config.model holds no fields to set"]),
        # absl's "The flag 'config.lr' is defined twice. First from absl.flags._flag, ...".
        (["--config.lr=0.2", "--config=experiments/mlp_scratch.py"], ["--config is given 2 t"]),
    ],
)
def test_bad_config_fails_in_one_line(tmp_path, args, fragments):
    result = run_cli(*TINY, f"--workdir={tmp_path / 'run'}", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()  # Failed before anything ran.


def test_a_compilation_cache_that_cannot_be_a_folder_is_passed_over(trained_workdir, tmp_path):
    # It only saves time: JAX warned at every compilation that read or wrote it.
    (tmp_path / "cache").write_text("")
    env = {"MLP_JAX_COMPILATION_CACHE": str(tmp_path / "cache")}
    evaluated = run_cli("--mode=eval", f"--workdir={trained_workdir[0]}", env=env)
    assert evaluated.returncode == 0 and evaluated.stderr == "", evaluated.stderr


def test_a_home_folder_this_process_has_none_of_is_passed_over_or_one_line(trained_workdir):
    # As under a container's bare --user (no HOME, no account): the compilation cache made a
    # folder named "~" in the current one, the data cache and --workdir were tracebacks.
    nobody = "~nosuchuser_mlp_jax"
    env = {"MLP_JAX_COMPILATION_CACHE": f"{nobody}/xla", "MLP_JAX_DATA_CACHE": f"{nobody}/idx"}
    try:
        evaluated = run_cli("--mode=eval", f"--workdir={trained_workdir[0]}", env=env)
        assert evaluated.returncode == 0 and evaluated.stderr == "", evaluated.stderr
        assert not (ROOT / nobody).exists()
        assert_one_line_error(
            run_cli("--mode=eval", f"--workdir={nobody}/run"),
            f"{nobody}/run: names a home folder this process has none of",
        )
    finally:
        shutil.rmtree(ROOT / nobody, ignore_errors=True)


# A model whose evaluation gives no number: eval's line held "NaN", which is not JSON.
NAN_IN_EVALUATION = """
import flax.linen as nn
import jax.numpy as jnp

from mlp_jax.config import base_config


class Model(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        logits = nn.Dense(10)(x)
        return logits if train else logits * jnp.nan


def get_config():
    config = base_config()
    config.model = __file__ + ":Model"
    return config
"""


def test_evals_output_is_json_when_the_model_gives_no_number(synthetic_dir, tmp_path):
    (tmp_path / "nan_model.py").write_text(NAN_IN_EVALUATION)
    trained = run_cli(
        f"--config={tmp_path / 'nan_model.py'}",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data_dir={synthetic_dir}",
        "--config.num_epochs=1",
    )
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("--mode=eval", f"--workdir={tmp_path / 'run'}")
    assert evaluated.returncode == 0, evaluated.stderr

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    line = json.loads(evaluated.stdout.strip().splitlines()[-1], parse_constant=refuse)
    assert line["test_loss"] is None and 0 <= line["test_acc"] <= 1


def test_missing_config_file_and_workdir(tmp_path):
    assert_one_line_error(
        run_cli("--config=experiments/nope.py", f"--workdir={tmp_path}"), "nope.py"
    )
    assert_one_line_error(run_cli(*TINY), "--workdir is required")
    # `make train CONFIG=`: "... failure to load: Path to config file is an empty string."
    assert_one_line_error(run_cli("--config=", f"--workdir={tmp_path}"), "--config is empty; give")
    assert_one_line_error(run_cli("--mode=eval", f"--workdir={tmp_path}"), "config.json: missing")
    # A newline in the path: the line was cut there, naming "TMP/no".
    assert_one_line_error(
        run_cli("--mode=eval", f"--workdir={tmp_path}/no\nsuch"), "no\\nsuch/config.json: miss"
    )


def _linked_copy(source, target):
    """A folder of links to `source`'s files, whose entries a test may replace."""
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).symlink_to(f)
    return target


def test_missing_and_corrupt_data_fail_in_one_line(synthetic_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*TINY, f"--workdir={tmp_path / 'a'}", f"--config.data_dir={empty}")
    assert_one_line_error(result, "lacks the Fashion-MNIST IDX files")

    corrupt = _linked_copy(synthetic_dir, tmp_path / "corrupt")
    broken = corrupt / "train-labels-idx1-ubyte"
    broken.unlink()
    broken.write_bytes((synthetic_dir / broken.name).read_bytes()[:1000])
    result = run_cli(*TINY, f"--workdir={tmp_path / 'b'}", f"--config.data_dir={corrupt}")
    assert_one_line_error(result, "train-labels-idx1-ubyte: truncated")
    # Refused before the workdir was made (it held a lock and an empty checkpoints/).
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_divergence_stops_with_the_epoch_and_saves_nothing_of_it(synthetic_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(
        *TINY,
        f"--workdir={workdir}",
        f"--config.data_dir={synthetic_dir}",
        "--config.lr=1e30",
        "--config.num_epochs=3",
    )
    assert_one_line_error(result, "training diverged", "in epoch 1", "lower --config.lr")
    assert not list((workdir / "checkpoints").glob("[0-9]*"))


def test_two_epoch_sweep_from_the_command_line(real_data_dir, tmp_path):
    result = run_cli(
        "--config=experiments/studies/exercises/width.py",
        "--quick",
        "--config.quick_num_epochs=2",
        f"--results_dir={tmp_path / 'results'}",
        f"--workdir={tmp_path / 'work'}",
        module="experiments.studies.exercises.run",
    )
    assert result.returncode == 0, result.stderr
    results = tmp_path / "results"
    record = json.loads((results / "width.json").read_text())
    assert record["quick"]
    assert [len(run["history"]) for run in record["runs"]] == [2] * 6  # 3 widths x 2 seeds.
    assert (results / "width.png").stat().st_size > 10_000
    assert "| val acc |" in (results / "width.md").read_text()
    # The test split is reported, never used to choose: each run carries it once.
    assert all("test_acc" in run and "test_acc" not in run["history"][-1] for run in record["runs"])


def test_trace_epoch_writes_a_profile_of_that_epoch(synthetic_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(
        *TINY,
        f"--workdir={workdir}",
        f"--config.data_dir={synthetic_dir}",
        "--config.num_epochs=2",
        "--config.trace_epoch=2",
    )
    assert result.returncode == 0, result.stderr
    (trace,) = (workdir / "plugins" / "profile").glob("*/*.xplane.pb")
    assert trace.stat().st_size > 10_000


def test_damaged_gzip_stream_fails_in_one_line(synthetic_dir, tmp_path):
    damaged = _linked_copy(synthetic_dir, tmp_path / "damaged")
    labels = damaged / "train-labels-idx1-ubyte"
    packed = bytearray(gzip.compress(labels.read_bytes()))
    packed[10] = 0xFF  # The first deflate block's header: a reserved block type (zlib.error).
    labels.unlink()
    (damaged / "train-labels-idx1-ubyte.gz").write_bytes(bytes(packed))
    result = run_cli(*TINY, f"--workdir={tmp_path / 'run'}", f"--config.data_dir={damaged}")
    assert_one_line_error(result, "train-labels-idx1-ubyte.gz: cannot read")


def test_batch_that_does_not_split_over_the_devices_fails_in_one_line(synthetic_dir, tmp_path):
    result = run_cli(
        *TINY,
        f"--workdir={tmp_path / 'run'}",
        f"--config.data_dir={synthetic_dir}",
        "--config.parallel=shard_map",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3", "JAX_PLATFORMS": "cpu"},
    )
    assert_one_line_error(result, "batch_size=256 does not split over 3 devices", "[1, 2]")


def test_exercise_and_search_errors_are_one_line_too(tmp_path):
    result = run_cli(
        "--config=experiments/studies/exercises/width.py",
        "--config.quick_num_epoch=2",
        f"--results_dir={tmp_path}",
        module="experiments.studies.exercises.run",
    )
    assert_one_line_error(result, "unknown config key 'quick_num_epoch'", "'quick_num_epochs'")
    result = run_cli(
        "--config=experiments/studies/search/joint_search.py",
        "--config.quick_num_candidates=100000",
        "--quick",
        f"--results_dir={tmp_path}",
        module="experiments.studies.search.run",
    )
    assert_one_line_error(result, "num_candidates=100000 exceeds")


@pytest.mark.parametrize(
    ("module", "arg", "fragment"),
    [
        ("benchmarks.knobs", "--epochs=ten", "flag --epochs=ten: invalid literal for int()"),
        ("benchmarks.run_all", "--quik", "Did you mean: quick ?"),
        ("experiments.studies.best.run", "--stage=nope", "<all|finals|ablation|report>"),
        ("experiments.studies.speedrun.run", "results", "unexpected arguments ['results']"),
        # Each ran and printed a table of "skipped: IndexError", "inf" or "skipped: KeyError".
        ("benchmarks.train_speed", "--epochs=0", "flag --epochs=0: 0 is not a positive integer"),
        ("benchmarks.checkpoint_cost", "--repeats=0", "--repeats=0: 0 is not a positive"),
        ("benchmarks.train_speed", "--peers=mlp_jax,nope", "give one or more of mlp_jax, flax_"),
        ("benchmarks.knobs", "--unrolls=4,x", "give whole numbers >= 1, each once, separated"),
        ("benchmarks.knobs", "--dtypes=nope", "give one or more of float32, bfloat16"),
        ("benchmarks.sweep_speed", "--sizes=8,0", "give whole numbers >= 1, each once, separated"),
        ("benchmarks.parallel_speed", "--counts=3,3", "give whole numbers >= 1, each once"),
    ],
)
def test_bad_flags_of_the_benchmarks_and_studies_are_one_line_too(module, arg, fragment):
    # Every command parses its absl flags in `errors.run_command`, the trainer's way.
    assert_one_line_error(run_cli(arg, module=module), fragment)


def test_model_too_large_for_memory_fails_in_one_line_before_allocating(synthetic_dir, tmp_path):
    result = run_cli(
        *TINY,
        f"--workdir={tmp_path / 'run'}",
        f"--config.data_dir={synthetic_dir}",
        "--config.num_hiddens=100000000",  # 784 x 10^8 float32 weights alone: 314 GB.
    )
    assert_one_line_error(result, "out of memory", "318.0 GB", "config.num_hiddens=100000000")
    assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))


def test_a_closed_output_stream_does_not_stop_the_run(synthetic_dir, tmp_path):
    # `python -m mlp_jax.main ... | head -2`: the progress lines are for the user; once no one
    # reads them, the run trains to its last epoch and saves it, silently.
    process = start_cli(
        *TINY,
        f"--workdir={tmp_path}",
        f"--config.data_dir={synthetic_dir}",
        "--config.num_epochs=4",
    )
    read = [process.stdout.readline() for _ in range(2)]
    process.stdout.close()  # As head does after its lines.
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 0, stderr
    assert "compiled in" in read[0] and read[1].startswith("epoch   1/4")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert (tmp_path / "checkpoints" / "4").is_dir()


CONFIG_FILES = {
    "no_get_config": "x = 1\n",
    "a_dict": "def get_config():\n    return {'lr': 0.1}\n",
    "none": "def get_config():\n    return None\n",
    "no_base_fields": (
        "import ml_collections\n\n\ndef get_config():\n"
        "    config = ml_collections.ConfigDict()\n    config.lr = 0.1\n    return config\n"
    ),
    "raises": "def get_config():\n    return 1 / 0\n",
    # Each ended the command with status 0 (a run that never started said it succeeded).
    "exits": "import sys\n\n\ndef get_config():\n    sys.exit(0)\n",
    "exits_at_import": "import sys\n\nsys.exit(0)\n",
    "another_kind": (
        "from mlp_jax.config import load_experiment\n\n\ndef get_config():\n"
        "    config = load_experiment('experiments/mlp_scratch.py')\n"
        "    config.num_hiddens = '16'\n    return config\n"
    ),
}


@pytest.mark.parametrize(
    "module, source, fragments",
    [
        ("mlp_jax.main", "no_get_config", ["no_get_config.py: defines no get_config()"]),
        ("mlp_jax.main", "a_dict", ["a_dict.py: its get_config() is a dict, not an"]),
        ("mlp_jax.main", "none", ["none.py: its get_config() is a NoneType"]),
        ("mlp_jax.main", "no_base_fields", ["no_base_fields.py: its get_config() lacks the"]),
        ("mlp_jax.main", "raises", ["raises.py: loading it raised ZeroDivisionError", "fix"]),
        ("mlp_jax.main", "exits", ["exits.py: ended the process (sys.exit(0)) as it was"]),
        (
            "experiments.studies.exercises.run",
            "exits_at_import",
            ["exits_at_import.py: ended the process (sys.exit(0)) as it was loaded"],
        ),
        # ml_collections' line named no reason: "Error whilst parsing config file:".
        ("mlp_jax.main", "another_kind", ["TypeError: Could not override field 'num_hiddens'"]),
        ("experiments.studies.exercises.run", None, ["--config is required, e.g."]),
        ("experiments.studies.search.run", None, ["--config is required, e.g."]),
        (
            "experiments.studies.exercises.run",
            "experiments/mlp_scratch.py",
            ["is not an exercise file", "lacks the field 'name'"],
        ),
        (
            "experiments.studies.search.run",
            "experiments/studies/exercises/width.py",
            ["is not a search file", "lacks the field 'title'"],
        ),
    ],
    ids=lambda v: str(v)[:30],
)
def test_a_config_file_of_the_wrong_kind_is_one_line_naming_it(tmp_path, module, source, fragments):
    args = [f"--results_dir={tmp_path / 'results'}"] if module != "mlp_jax.main" else []
    if source in CONFIG_FILES:
        (tmp_path / f"{source}.py").write_text(CONFIG_FILES[source])
        args.append(f"--config={tmp_path / source}.py")
    elif source is not None:
        args.append(f"--config={source}")
    workdir = tmp_path / "run"
    result = run_cli(*args, f"--workdir={workdir}", module=module)
    assert_one_line_error(result, *fragments)
    assert not workdir.exists()  # Refused before anything was made.
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "env, args, fragments",
    [
        ({"JAX_PLATFORMS": "gpu"}, [], ["JAX cannot start the devices", "JAX_PLATFORMS='gpu'"]),
        ({"JAX_PLATFORMS": "tpuu"}, [], ["Unable to initialize backend 'tpuu'", "or unset"]),
        ({"JAX_PLATFORM_NAME": "bogus"}, [], ["Unknown backend bogus", "JAX_PLATFORM_NAME="]),
        # A platform JAX knows, without its plugin here: JAX's AssertionError, a traceback.
        ({"JAX_PLATFORMS": "cuda"}, [], ["JAX_PLATFORMS='cuda' names no platform this"]),
        # Read by JAX as it is imported: the --config file that imported it first was blamed.
        ({"JAX_NUM_CPU_DEVICES": "abc"}, [], ["JAX_NUM_CPU_DEVICES='abc' is not a value JAX"]),
        ({"JAX_ENABLE_X64": "maybe"}, [], ["JAX_ENABLE_X64='maybe' is not a value JAX"]),
        # Trained from a workdir and a compilation of 22 s to the ahead-of-time's traceback.
        ({"JAX_DISABLE_JIT": "1"}, [], ["JAX_DISABLE_JIT is set: mlp_jax's commands compile"]),
        # matplotlib's traceback after the run trained, at its plot, and at every rerun's.
        ({"MPLBACKEND": "bogus"}, [], ["MPLBACKEND='bogus' is not a backend matplotlib"]),
        (
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=-3"},
            [],
            ["JAX cannot start the devices", "XLA_FLAGS='--xla_force_host_platform_device_count"],
        ),
        ({}, ["--data_dir=/tmp"], ["--data_dir is for --mode=eval", "--config.data_dir"]),
        # Its overrides were passed over without a word: eval reads the run's own config.
        ({}, ["--mode=eval", "--config.num_hiddens=99"], ["--config is for --mode=train"]),
    ],
    ids=[
        "platform_missing",
        "platform_unknown",
        "platform_name_unknown",
        "platform_without_its_plugin",
        "jax_setting_refused",
        "jax_true_or_false_refused",
        "jit_disabled",
        "plot_backend_unknown",
        "device_count",
        "eval_flag_in_training",
        "training_flag_in_eval",
    ],
)
def test_a_start_up_setting_the_machine_cannot_honour_is_one_line(tmp_path, env, args, fragments):
    workdir = tmp_path / "run"
    result = run_cli(*TINY, f"--workdir={workdir}", *args, env=env)
    assert_one_line_error(result, *fragments)
    assert not workdir.exists()  # Refused before anything was made.


def test_a_config_given_an_argument_that_exits_is_one_line_naming_its_file(tmp_path):
    # ml_collections reads FILE:ARGUMENT; the exit was checked against "FILE:ARGUMENT",
    # which is no file, and not at all with the file after --config: status 0.
    (tmp_path / "exits.py").write_text(
        "import sys\n\n\ndef get_config(argument):\n    sys.exit(0)\n"
    )
    for given in (
        [f"--config={tmp_path / 'exits.py'}:abc"],
        ["--config", f"{tmp_path}/exits.py:a"],
    ):
        result = run_cli(*given, f"--workdir={tmp_path / 'run'}")
        assert_one_line_error(result, "exits.py: ended the process (sys.exit(0)) as it was loaded")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "module, config",
    [
        ("experiments.studies.exercises.run", "experiments/studies/exercises/width.py"),
        ("experiments.studies.search.run", "experiments/studies/search/joint_search.py"),
    ],
    ids=["exercise", "search"],
)
def test_a_study_on_devices_the_machine_cannot_give_is_one_line_naming_the_setting(
    tmp_path, module, config
):
    # Its model was blamed: "fails on a batch of images (...); fix the model".
    results = tmp_path / "results"
    result = run_cli(
        f"--config={config}",
        f"--results_dir={results}",
        module=module,
        env={"JAX_PLATFORMS": "gpu"},
    )
    assert_one_line_error(result, "JAX cannot start the devices", "check or unset JAX_PLATFORMS=")
    assert not results.exists()


@pytest.mark.parametrize(
    "module", ["benchmarks.knobs", "experiments.studies.exercises.run", "mlp_jax.main"]
)
def test_a_jax_setting_jax_refuses_is_one_line_in_every_command(module):
    # A benchmark's or a study's module imports JAX first: it was JAX's traceback there.
    result = run_cli(module=module, env={"JAX_ENABLE_X64": "maybe"})
    assert_one_line_error(result, "JAX_ENABLE_X64='maybe' is not a value JAX takes")


def test_a_plot_backend_matplotlib_does_not_know_is_one_line_in_a_study():
    # The studies import matplotlib first: its traceback, as the trainer's was after a run.
    result = run_cli(module="experiments.studies.exercises.run", env={"MPLBACKEND": "bogus"})
    assert_one_line_error(result, "MPLBACKEND='bogus' is not a backend matplotlib knows")


# Ctrl-C as the --config file loads, before the command takes the signals: Python's
# KeyboardInterrupt was a traceback; raised in a finalizer (as in JAX's garbage-collection
# callback, where a trial's Ctrl-C fell), it was lost, and the command trained to its end.
CTRL_C_WHILE_STARTING = {
    "in_the_config_file": "import os, signal\n\nos.kill(os.getpid(), signal.SIGINT)\n",
    "in_a_finalizer": (
        "import os, signal\n\n\nclass Finalized:\n    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n\n\nFinalized()\n"
    ),
}


@pytest.mark.parametrize("where", CTRL_C_WHILE_STARTING)
def test_ctrl_c_while_a_command_starts_is_one_line_and_makes_nothing(tmp_path, where):
    config = tmp_path / "interrupted.py"
    scratch = ROOT / "experiments" / "mlp_scratch.py"
    config.write_text(
        CTRL_C_WHILE_STARTING[where]
        + "import importlib.util\n\n"
        + f"spec = importlib.util.spec_from_file_location('scratch', {str(scratch)!r})\n"
        + "scratch = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(scratch)\n"
        + "get_config = scratch.get_config\n"
    )
    workdir = tmp_path / "run"
    result = run_cli(
        f"--config={config}", *TINY[1:], "--config.num_epochs=1", f"--workdir={workdir}"
    )
    assert result.returncode == 128 + signal.SIGINT
    assert_one_line_error(result, "stopped by SIGINT as it started, before it did anything")
    assert not workdir.exists()


def test_a_users_module_that_imports_mlp_jax_keeps_its_own_ctrl_c(tmp_path):
    # `python -m theirs.run`, whose package imports mlp_jax: mlp_jax took it for one of its
    # commands starting, and the user's Ctrl-C ended the process at once, their `except
    # KeyboardInterrupt` and cleanups skipped, in mlp_jax's line (trial 11).
    package = tmp_path / "theirs"
    package.mkdir()
    (package / "__init__.py").write_text("import mlp_jax\n")
    (package / "run.py").write_text(
        "import os, signal, time\n\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\nexcept KeyboardInterrupt:\n    print('theirs')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "theirs.run"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "theirs\n", "")


def test_make_takes_a_workdir_whose_name_holds_a_space(tmp_path):
    # The recipes quote it: unquoted, "with space" gave "unexpected arguments ['space']".
    # `-o install`: the set-up is this session's own, with this interpreter.
    workdir = tmp_path / "with space"
    env = without_tensorflow_env()
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # As a user's shell runs make.
        env.pop(name, None)

    def make(*args):
        command = ["make", "-s", "-o", "install", f"PY={sys.executable}", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    evaluated = make("eval", f"WORKDIR={workdir}")
    assert evaluated.returncode != 0
    assert f"error: {workdir}/config.json: missing" in evaluated.stderr, evaluated.stderr
    trained = make("-n", "train", f"WORKDIR={workdir}", "CONFIG=experiments/mlp concise.py")
    assert f"--config='experiments/mlp concise.py' --workdir='{workdir}'" in trained.stdout
    # Quotes in a name: a '"' was "Syntax error: Unterminated quoted string".
    for name in ('a"b', "it's"):
        evaluated = make("eval", f"WORKDIR={tmp_path / name}")
        assert f"error: {tmp_path / name}/config.json: missing" in evaluated.stderr
    # The default workdir, named after a config whose path holds spaces (make's own
    # functions, word by word, made it "runs/my mlp concise").
    evaluated = make("eval", "CONFIG=my experiments/mlp concise.py")
    assert f"error: {ROOT}/runs/mlp concise/config.json: missing" in evaluated.stderr
    # A config named with a leading '-': basename took it for options, and the run was
    # trained into runs/ itself (trial 13).
    evaluated = make("eval", "CONFIG=-wide.py")
    assert f"error: {ROOT}/runs/-wide/config.json: missing" in evaluated.stderr, evaluated.stderr
    # A newline cannot be quoted for the shell: "Syntax error: Unterminated quoted string".
    evaluated = make("eval", f"WORKDIR={tmp_path}/a\nb")
    assert "CONFIG, WORKDIR and ARGS cannot hold a newline" in evaluated.stderr
    # eval's ARGS were dropped, and with them the --data_dir its own line asks for.
    evaluated = make("eval", f"WORKDIR={workdir}", "ARGS=--data_dir=/nonexistent --bogus")
    assert "Unknown command line flag 'bogus'" in evaluated.stderr, evaluated.stderr


def _make(*args, cwd=ROOT, env=None):
    """make as a user's shell runs it (no make of the suite's own above it)."""
    env = {k: v for k, v in (env or os.environ).items() if k not in ("MAKELEVEL", "MAKEFLAGS")}
    return subprocess.run(
        ["make", "-s", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_set_up_of_make_in_odd_states_is_one_line_each(tmp_path):
    # Each was found by trial 13 as make's or Python's own lines.
    # An empty PYTHON: "make: m: No such file or directory ... Error 127 (ignored)".
    result = _make("-n", "train", "PYTHON=")
    assert result.returncode == 2 and "PYTHON is empty; give the Python 3.11" in result.stderr
    # A '$' in the clone's path: two setuptools tracebacks from pip's editable install.
    odd = tmp_path / "my r$o"
    odd.mkdir()
    shutil.copy(ROOT / "Makefile", odd)
    result = _make("-n", "install", cwd=odd)
    assert result.returncode == 2 and "this clone's path holds a '$'" in result.stderr
    # A .venv whose interpreter is gone: "/bin/sh: .venv/bin/python: not found", apt-get run
    # for data already installed; without .installed, Python's own "[Errno 2]" from venv.
    clone = tmp_path / "clone"
    (clone / ".venv" / "bin").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, clone)
    (clone / ".venv" / "bin" / "python").symlink_to(tmp_path / "gone" / "python3")
    (clone / ".venv" / ".installed").touch()
    for target in ("train", "install"):
        result = _make(target, cwd=clone)
        assert result.returncode == 2
        assert result.stderr.splitlines()[0] == (
            "error: .venv is there, but .venv/bin/python does not run (made by a Python since "
            "moved or removed, or one this user may not run); delete .venv and run make again"
        )
        (clone / ".venv" / ".installed").unlink(missing_ok=True)
    # A file of the user's named .venv: Python's "Unable to create directory".
    shutil.rmtree(clone / ".venv")
    (clone / ".venv").write_text("mine")
    result = _make("install", cwd=clone)
    assert result.returncode == 2 and (clone / ".venv").read_text() == "mine"
    assert result.stderr.startswith("error: .venv is a file, not the folder make sets up; move")
    # The data's setting naming them wrongly: a traceback, apt-get, then TensorFlow added.
    here = ["-o", ".venv/.installed", f"PY={sys.executable}", "data"]
    result = _make(*here, env={**os.environ, "FASHION_MNIST_DIR": "file:///x"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: file:///x: file:// paths are not read here")
    assert "Traceback" not in result.stderr and "apt" not in result.stderr
    # A run given its data (a bucket's, on a TPU VM) looks for none here.
    given = _make("-n", "install", "ARGS=--config.data_dir=gs://bucket/fashion-mnist")
    assert given.returncode == 0 and "FIND_DATA" not in given.stdout
    assert "FIND_DATA" in _make("-n", "install").stdout
    # The data missing and apt-get failing: TensorFlow and TFDS were installed into .venv,
    # whose download then retried for 3.5 minutes. One line saying how to get them now.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\necho 'E: no network' >&2\nexit 100\n")
    (fake / "apt-get").chmod(0o755)
    (tmp_path / "empty").mkdir()
    hidden = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"']
    hidden += [str(tmp_path / "empty"), str(data.DEBIAN_DIR), "make", "-s", *here]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS")}
    env["PATH"] = f"{fake}:{env['PATH']}"
    result = subprocess.run(hidden, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-2].startswith(
        "error: Fashion-MNIST's IDX files are not installed, and apt-get could not install "
        "dataset-fashion-mnist; put its four IDX files"
    )


def test_two_makes_in_a_fresh_clone_set_it_up_once(tmp_path):
    # The second's `pip install --upgrade pip` replaced pip under the first: its traceback
    # (trial 13). A stand-in Python makes a .venv whose python logs each call, slowly.
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, clone)
    log = tmp_path / "calls"
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\nmkdir -p .venv/bin\n"
        f"printf '#!/bin/sh\\necho \"$*\" >> {log}\\nsleep 1\\n' > .venv/bin/python\n"
        "chmod +x .venv/bin/python\n"
    )
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS")}
    command = ["make", "-s", f"PYTHON={fake}", ".venv/.installed"]
    makes = [
        subprocess.Popen(command, cwd=clone, env=env, stdout=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    outputs = [make.communicate(timeout=60)[0] for make in makes]
    assert [make.returncode for make in makes] == [0, 0]
    assert log.read_text().count("pip install") == 2  # pip, then the project: once each.
    # The second said why it waited (it waited without a word for as long as it took).
    waiting = "make: waiting for the set-up of .venv another make is running (it holds .venv.lock)"
    assert sorted(output.count(waiting) for output in outputs) == [0, 1], outputs


def test_a_compilation_cache_entry_that_is_a_pipe_is_passed_over(synthetic_dir, tmp_path):
    # JAX opened it as the run compiled that program, and waited for ever (trial 10).
    cache = tmp_path / "xla"
    args = [*TINY, f"--config.data_dir={synthetic_dir}"]
    env = {"MLP_JAX_COMPILATION_CACHE": str(cache)}
    assert run_cli(*args, f"--workdir={tmp_path / 'first'}", env=env).returncode == 0
    (entry,) = cache.glob("jit_train_epoch*-cache")
    entry.unlink()
    os.mkfifo(entry)
    result = run_cli(*args, f"--workdir={tmp_path / 'second'}", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"the compilation cache {cache} holds {entry.name}, a named pipe (FIFO); going on" in (
        result.stderr
    )
