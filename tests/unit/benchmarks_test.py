"""The benchmarks' own arithmetic on tiny sizes: FLOP counts, the ceiling, the processor's
flags, compile-time accounting, seed statistics. (The peers, the hardware tables and the
device check as processes: tests/integration/benchmarks_cli_test.py.)"""

import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import experiment

from benchmarks import ceiling, hardware, launch, report, sweep_speed
from mlp_jax import steps
from mlp_jax.errors import UserError

mlp_concise = experiment("mlp_concise")


@pytest.mark.parametrize("hidden, layers", [(256, 1), (64, 3)])
def test_flop_count_matches_what_xla_compiles(hidden, layers):
    model = mlp_concise.MLP(num_hiddens=hidden, num_layers=layers)
    state = steps.create_train_state(model, optax.sgd(0.1), 0)
    batch = {
        "images": jnp.zeros((256, 784), jnp.uint8),
        "labels": jnp.zeros(256, jnp.int32),
        "weights": jnp.ones(256),
    }
    compiled = jax.jit(steps.train_step).lower(state, batch, jax.random.key(0)).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    # XLA also counts the elementwise operations, a few per cent at most.
    counted = 256 * ceiling.train_flops_per_example(hidden, layers)
    assert counted <= analysis["flops"] <= 1.03 * counted


def test_ceiling_measures_both_dtypes_and_names_the_processor():
    rows = ceiling.run(quick=True)
    assert [r["dtype"] for r in rows] == ["float32", "bfloat16"]
    assert all(r["best"] >= r["jax"] > 0 for r in rows)
    assert set(ceiling.chapter_ceiling(rows)) == {"float32", "bfloat16"}
    assert "Processor: " in ceiling.markdown(rows)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "fma", "avx512f"}, False),
        ({"avx512f", "avx512_bf16"}, True),
        ({"amx_tile", "amx_bf16"}, True),
        ({"fp", "asimd", "bf16"}, True),
    ],
)
def test_bfloat16_units_are_told_from_the_cpu_flags(flags, expected):
    assert report.has_bfloat16_units(frozenset(flags)) is expected


def test_compile_seconds_count_compilation_only():
    fn = jax.jit(lambda x: jnp.tanh(x) @ x.T)
    x = jnp.ones((64, 64))
    with sweep_speed.compile_seconds() as first:
        jax.block_until_ready(fn(x))
    with sweep_speed.compile_seconds() as cached:
        jax.block_until_ready(fn(x))
    assert first[0] > 0 and cached[0] == 0


def test_seed_statistics():
    summary = report.summarize([0.84, 0.85, 0.86])
    assert summary["mean"] == pytest.approx(0.85) and summary["std"] == pytest.approx(0.01)
    assert summary["se"] == pytest.approx(0.01 / 3**0.5)
    other = report.summarize([0.83, 0.84, 0.85])
    assert report.difference_in_standard_errors(summary, other) == pytest.approx(
        0.01 / (0.01 * (2 / 3) ** 0.5)
    )


@pytest.mark.parametrize("n", [128, 129])
def test_matmul_rows_are_consistent(n):
    (row,) = hardware.matmul_table([n], ("float32",), quick=True)
    assert row["tflops"] == pytest.approx(2 * n**3 / row["seconds"] / 1e12)


def test_device_check_goals_mark_each_goal_met_or_not():
    from benchmarks import device_check

    chapter = [{"run": "mlp_scratch", "epochs": 0.12}, {"run": "mlp_concise", "epochs": 0.10}]
    knob = [
        {"dtype": "float32", "scan_unroll": 1, "epochs_per_program": 1, "loop": 0.11},
        {"dtype": "bfloat16", "scan_unroll": 4, "epochs_per_program": 10, "loop": 0.07},
        # Faster, but not the plain path's parameters: it does not count.
        {"dtype": "bfloat16", "scan_unroll": 16, "epochs_per_program": 10, "loop": 0.05},
    ]
    for row, same in zip(knob, (None, True, False), strict=True):
        row["same_params"] = same
    peers = [
        {"peer": "mlp_jax", "seconds": 0.2},
        {"peer": "torch_d2l", "seconds": 12.0},
        {"peer": "flax_loop", "skipped": "missing"},
    ]
    populations = {(1, False): 20.0, (256, False): 1.7, (256, True): 0.5}
    table = device_check.goals(chapter, knob, peers, populations, warm_process=6.2)
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert rows["chapter's 10 epochs <= 0.08 s (default config, training only)"].endswith(
        "| 0.100 s | no |"
    )
    fastest = next(k for k in rows if "fastest knobs" in k)
    assert "scan_unroll=4, epochs_per_program=10, bfloat16" in fastest
    assert rows[fastest].endswith("| 0.070 s | yes |")
    assert rows[">= 50x faster than torch_d2l"].endswith("| 60.0x | yes |")
    assert rows[">= 50x faster than flax_loop"].endswith("| not measured | no |")
    assert rows["256 models (separate data orders) <= 0.6 ms per model-epoch"].endswith("| no |")
    assert rows["256 models (one shared data order) <= 0.6 ms per model-epoch"].endswith("| yes |")
    warm = "whole `make train` process, warm compilation cache <= 5.0 s"
    assert rows[warm].endswith("| 6.200 s | no |")


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "results/speedrun.md"),
        (["--quick"], "runs/quick/results/speedrun.md"),  # Never the full run's file.
        (["--quick", "--out=mine.md"], "mine.md"),
    ],
)
def test_a_quick_run_writes_beside_the_full_runs_results_unless_told(argv, expected):
    from absl import flags  # noqa: PLC0415

    flag_values = flags.FlagValues()
    flags.DEFINE_string("out", "results/speedrun.md", "", flag_values=flag_values)
    flags.DEFINE_bool("quick", False, "", flag_values=flag_values)
    flag_values(["command", *argv])
    assert report.output_path("out", flag_values) == expected


def test_a_command_a_benchmark_runs_that_ends_in_a_users_line_ends_it_in_that_line(tmp_path):
    # A RuntimeError's traceback wrapped it (MPLBACKEND=bogus in benchmarks.startup).
    with pytest.raises(UserError, match=r"mlp_jax.main failed: .*run/config.json: missing"):
        launch.run("--mode=eval", f"--workdir={tmp_path / 'run'}", check=True)
