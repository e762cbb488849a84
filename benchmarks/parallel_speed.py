r"""Examples/s of the chapter's training epoch for none / pmap / shard_map on 1, 2, 4 and 8
devices. On a CPU the devices are faked with XLA_FLAGS (they share the same cores), so the
figures show the cost of the parallel machinery, not a speed-up.

  python -m benchmarks.parallel_speed [--counts=1,2,4,8]
"""

import os

from absl import flags

from benchmarks import launch, report
from mlp_jax import errors, progress

FLAGS = flags.FLAGS


def _measure(counts: list[int]) -> list[tuple[str, int, float]]:
    from mlp_jax import data, loop
    from mlp_jax.config import load_experiment

    dataset = data.load_dataset()
    rows = []
    for mode in ("none", "pmap", "shard_map"):
        # pmap and shard_map on 1 device too: what their wrapping alone costs.
        for count in [1] if mode == "none" else counts:
            config = load_experiment("experiments/mlp_concise.py")
            config.parallel, config.num_devices, config.num_epochs = mode, count, 2
            last = loop.fit(config, dataset).history[-1]  # The second epoch: steady state.
            rows.append((mode, count, last["examples_per_sec"]))
    return rows


def run(counts: str = "1,2,4,8") -> str:
    """Measures in a child process with max(counts) (fake on CPU) devices; returns Markdown."""
    numbers = [int(c) for c in counts.split(",")]
    env = {**os.environ}
    if "cuda" not in env.get("JAX_PLATFORMS", "") and "XLA_FLAGS" not in env:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(numbers)}"
    return launch.run(
        "--child", f"--counts={counts}", module="benchmarks.parallel_speed", env=env, check=True
    ).stdout


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    report.define_counts("counts", ["1", "2", "4", "8"], "The device counts.")
    flags.DEFINE_bool("child", False, "(The child process, on faked devices) measure.")


def main() -> None:
    """Prints the table (the child process does the measuring)."""
    if not FLAGS.child:
        progress.emit(run(",".join(FLAGS.counts)))
        return
    import jax

    device = jax.devices()[0]
    rows = [
        f"| {mode} | {count} | {speed:,.0f} |"
        for mode, count, speed in _measure([int(c) for c in FLAGS.counts])
    ]
    progress.emit(
        f"{jax.device_count()} {device.platform} device(s) ({device.device_kind}).\n\n"
        + "\n".join(["| mode | devices | examples/s |", "|---|---:|---:|", *rows])
    )


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
