"""Populations over several devices and several processes, and an exercise's numbers on 1
and on 4 devices: each equal to one device's."""

import json
import socket

import pytest
from helpers import PARALLEL_LR, QUICK_COMPILE_XLA_FLAGS, ROOT, run_cli, start_cli

from mlp_jax import sweep


def _run_multidevice_sweeps(synthetic_dir, out, sizes, env):
    return start_cli(
        str(synthetic_dir),
        str(out),
        sizes,
        module="multidevice_sweeps",
        env={**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT / "tests" / "integration")},
    )


def _assert_same_results(results, reference, tolerance=1e-5):
    assert len(results) == len(reference)
    for member, expected in zip(results, reference, strict=True):
        for record, expected_record in zip(member["history"], expected["history"], strict=True):
            for key, value in expected_record.items():
                assert record[key] == pytest.approx(value, rel=tolerance, abs=tolerance), key
        for key in ("test_loss", "test_acc"):
            assert member[key] == pytest.approx(expected[key], rel=tolerance, abs=tolerance)


def test_population_spread_over_eight_devices_equals_one_device(synthetic_dir, tmp_path):
    out = tmp_path / "sweeps.json"
    process = _run_multidevice_sweeps(
        synthetic_dir,
        out,
        "8,10,5s",
        # Tiny programs each run once: compiled quick (the two-process runs as users do).
        {"XLA_FLAGS": f"{QUICK_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=8"},
    )
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    # 10 models on 8 devices: padded to 16, 6 inert members dropped; 5 of one seed, sharing
    # each batch: padded to 8.
    for size in ("8", "10", "5s"):
        assert results[size]["devices"] == 8
        assert len(results[size]["all"]) == int(size.removesuffix("s"))
        _assert_same_results(results[size]["all"], results[size]["one"])
    assert len({m["history"][-1]["train_loss"] for m in results["5s"]["all"]}) == 5
    # The members really differ, so equality above is member by member.
    assert len({m["history"][-1]["train_loss"] for m in results["10"]["all"]}) == 10


def test_population_over_two_processes_equals_one_process(synthetic_dir, tmp_path):
    from helpers import small_dataset
    from multidevice_sweeps import population

    out = tmp_path / "sweeps.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [
        _run_multidevice_sweeps(
            synthetic_dir,
            out,
            "6",
            {
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    distributed = json.loads(out.read_text())["6"]
    assert distributed["devices"] == 4
    alone = sweep.train_group(population(str(synthetic_dir), "6"), small_dataset())
    _assert_same_results(distributed["all"], alone)


def test_quick_exercise_on_four_devices_writes_the_same_numbers(synthetic_dir, tmp_path):
    """`make exercises QUICK=1`'s width grid on 1 and on 4 devices (on the small synthetic
    data, at the rate at which device counts agree); its output shows one progress line per
    population (it is not a terminal here)."""
    runs = {}
    for devices in (1, 4):
        result = run_cli(
            "--config=experiments/studies/exercises/width.py",
            "--quick",
            f"--config.train.data_dir={synthetic_dir}",
            "--config.train.validation_size=1000",
            f"--config.train.lr={PARALLEL_LR}",
            f"--results_dir={tmp_path / str(devices)}",
            f"--workdir={tmp_path / f'work{devices}'}",
            module="experiments.studies.exercises.run",
            env={
                "XLA_FLAGS": f"{QUICK_COMPILE_XLA_FLAGS} "
                f"--xla_force_host_platform_device_count={devices}",
                "JAX_PLATFORMS": "cpu",
            },
        )
        assert result.returncode == 0, result.stderr[-3000:]
        progress = [line for line in result.stdout.splitlines() if line.startswith("population ")]
        assert [line.split(" (")[0] for line in progress] == [
            f"population {i}/3" for i in (1, 2, 3)
        ]
        assert "2 models" in progress[0] and "best val_acc so far" in progress[0]
        runs[devices] = json.loads((tmp_path / str(devices) / "width.json").read_text())["runs"]
    for one, four in zip(runs[1], runs[4], strict=True):
        assert one["point"] == four["point"]
        for a, b in zip(one["history"], four["history"], strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                assert a[key] == pytest.approx(b[key], abs=1e-4), key
