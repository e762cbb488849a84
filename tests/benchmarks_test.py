"""The benchmark code itself, on tiny sizes: it runs, it reports, a missing peer is reported."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import ROOT, without_tensorflow_env

from benchmarks import ceiling, hardware, stats, sweep_speed, train_speed
from experiments import mlp_concise
from mlp_jax import steps


def test_mlp_jax_peer_reports_its_numbers(real_data_dir):
    row = train_speed.run_peer_process("mlp_jax", epochs=1)
    assert row["seconds"] > 0 and row["warmup"] > 0 and row["peak_rss_mb"] > 100
    assert 0.7 < row["test_acc"] < 1.0
    table = train_speed.table([row], epochs=1)
    assert "| mlp_jax | float32 |" in table and "1.00x" in table
    # Against a ceiling of the achieved rate itself, the fraction is 100 %.
    rate = train_speed.achieved_flops(row["seconds"], 1) / 1e9
    table = train_speed.table([row], 1, {"float32": rate, "bfloat16": rate})
    assert "| 100% |" in table


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
    assert ceiling.has_bfloat16_units(frozenset(flags)) is expected


def test_compile_seconds_count_compilation_only():
    fn = jax.jit(lambda x: jnp.tanh(x) @ x.T)
    x = jnp.ones((64, 64))
    with sweep_speed.compile_seconds() as first:
        jax.block_until_ready(fn(x))
    with sweep_speed.compile_seconds() as cached:
        jax.block_until_ready(fn(x))
    assert first[0] > 0 and cached[0] == 0


def test_seed_statistics():
    summary = stats.summarize([0.84, 0.85, 0.86])
    assert summary["mean"] == pytest.approx(0.85) and summary["std"] == pytest.approx(0.01)
    assert summary["se"] == pytest.approx(0.01 / 3**0.5)
    other = stats.summarize([0.83, 0.84, 0.85])
    assert stats.difference_in_standard_errors(summary, other) == pytest.approx(
        0.01 / (0.01 * (2 / 3) ** 0.5)
    )


def test_missing_peer_library_is_reported_as_skipped(tmp_path, real_data_dir):
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (test)')\n")
    row = train_speed.run_peer_process(
        "torch_fast", epochs=1, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    )
    assert "No module named torch" in row["skipped"]
    table = train_speed.table([row], epochs=1)
    assert "| torch_fast | float32 | skipped: " in table


def test_hardware_tables_on_tiny_sizes(real_data_dir):
    markdown = hardware.run(quick=True)
    for heading in ("Matrix products", "Memory bandwidth", "Framework (nn.Dense) vs scratch"):
        assert heading in markdown
    assert "| float32 | 129 |" in markdown and "| bfloat16 | 136 |" in markdown


@pytest.mark.parametrize("n", [128, 129])
def test_matmul_rows_are_consistent(n):
    (row,) = hardware.matmul_table([n], dtypes=("float32",))
    assert row["tflops"] == pytest.approx(2 * n**3 / row["seconds"] / 1e12)


def test_device_check_on_tiny_sizes_without_tensorflow(real_data_dir, tmp_path):
    out = tmp_path / "bench_gpu.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", "--quick", f"--out={out}"],
        cwd=ROOT,
        env=without_tensorflow_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for heading in (
        "The chapter through the command line",
        "The ceiling: an epoch of only the chapter's matrix products",
        "Peers on the same device",
        "Vmapped populations",
        "Matrix products",
        "Memory bandwidth",
        "Parallel modes",
        "Speedrun recipes",
    ):
        assert f"## {heading}" in report or f"### {heading}" in report, heading
    assert "| mlp_scratch resumed for epoch 2 |" in report and "FAILED" not in report
    assert "| mlp_jax_bf16 | bfloat16 |" in report
    assert report.count("| ok |") == 2  # Resumption and evaluation both checked.
    for mode in ("none", "pmap", "shard_map"):
        assert f"| {mode} | 1 |" in report
