"""The benchmarks as they run: each peer in its own process, the hardware tables on the real
data, and the one-call device check on tiny sizes without TensorFlow."""

from helpers import QUICK_COMPILE_XLA_FLAGS, ROOT, run_cli

from benchmarks import hardware, train_speed


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


def test_device_check_on_tiny_sizes_without_tensorflow(real_data_dir, tmp_path):
    out = tmp_path / "bench_gpu.md"
    # A check of the script, not of XLA's CPU code: compiled as the fast tier compiles.
    result = run_cli(
        "--quick",
        f"--out={out}",
        module="benchmarks.device_check",
        env={"XLA_FLAGS": QUICK_COMPILE_XLA_FLAGS},
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
        "The whole process, first with a fresh compilation cache, then warm",
        "Knobs: scan unroll, epochs per program, dtype",
    ):
        assert f"## {heading}" in report or f"### {heading}" in report, heading
    assert "| mlp_scratch resumed for epoch 2 |" in report and "FAILED" not in report
    assert "| mlp_jax_bf16 | bfloat16 |" in report
    # Resumption and evaluation; the export served.
    assert report.count("| ok |") == 2 + 1 and "served on cpu without mlp_jax" in report
    # In each dtype, unroll 1 and 4 by 1 and 2 epochs per program: each variant's parameters
    # those of the first.
    assert report.count("| reference |") == 2 and report.count("| same |") == 6
    assert "| bfloat16 | 4 | 2 |" in report
    assert "| 2 | shared |" in report and "| 2 | separate |" in report
    for mode in ("none", "pmap", "shard_map"):
        assert f"| {mode} | 1 |" in report


def test_cpu_bfloat16_table_on_tiny_sizes(real_data_dir):
    result = run_cli("--quick", module="benchmarks.cpu_bfloat16", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| (none)", "| `--xla_cpu_use_onednn=true`"]
    for row in rows:  # Rates and seconds measured, and the speed-up their ratio.
        cells = row.strip("| ").split(" | ")
        float32, bfloat16 = float(cells[3]), float(cells[4])
        assert float32 > 0 and bfloat16 > 0
        # Of the unrounded seconds, which are rounded to 0.01 s of about 0.5 s.
        assert abs(float(cells[5][:-1]) - float32 / bfloat16) < 0.06
