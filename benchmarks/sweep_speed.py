r"""Seconds per model-epoch for vmapped populations of 1, 8 and 64 models (256 on a GPU),
each with separate data orders (one seed per member) and with one shared order.

  python -m benchmarks.sweep_speed [--sizes=1,8,64] [--epochs=2]
  python -m benchmarks.sweep_speed --devices [--sizes=64,256] [--epochs=1]   # 1 vs all devices

Each population trains the chapter's scratch MLP (784-256-10, SGD 0.1, batch 256) on
Fashion-MNIST with validation after every epoch, through `mlp_jax.sweep`: members of seeds
0..N-1 (each its own data order), or, with a shared order, of seed 0 and N learning rates
around 0.1 (each batch gathered once, one wide product per layer: `config.share_data_order`).
Compilation is
timed apart, as the seconds JAX itself reports spending on tracing, lowering and compiling
(`jax.monitoring` events), so it cannot come out negative. The last column is the cost per
model-epoch relative to a population of 1.
"""

import contextlib
import functools
import io
import os
import time

import jax
from absl import flags

from benchmarks import launch, report
from mlp_jax import data, errors, parallel, progress, sweep
from mlp_jax.config import load_experiment

FLAGS = flags.FLAGS

# JAX's events for the phases of making a program: tracing, lowering, backend compilation.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_seconds = [0.0]


def _count_compile_seconds(event: str, seconds: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile_seconds)


@contextlib.contextmanager
def compile_seconds():
    """Yields a list whose one item becomes the seconds JAX spent making programs inside
    the `with` block."""
    spent = [0.0]
    start = _compile_seconds[0]
    try:
        yield spent
    finally:
        spent[0] = _compile_seconds[0] - start


def time_population(
    size: int, epochs: int, dataset, mesh=None, shared_order: bool = False
) -> tuple[float, float]:
    """(compile seconds, steady seconds per model-epoch) for a population of `size`, spread
    over `mesh` (default: every device), of separate data orders or one shared order; the
    steady time is that of a second, compiled run."""
    configs = []
    for i in range(size):
        config = load_experiment("experiments/mlp_scratch.py")
        config.num_epochs = epochs
        if shared_order:
            config.lr = 0.1 * 1.01**i
        else:
            config.seed = i
        configs.append(config)
    assert sweep.shares_order(configs) == shared_order
    run = functools.partial(
        sweep.train_population, configs, dataset, max_population=size, progress=False, mesh=mesh
    )
    with contextlib.redirect_stdout(io.StringIO()):  # The progress lines.
        with compile_seconds() as compiling:
            run()
        t0 = time.perf_counter()
        run()
        steady = time.perf_counter() - t0
    return compiling[0], steady / (size * epochs)


def devices_table(sizes: str = "64,256", epochs: int = 1, fake_devices: int = 8) -> str:
    """ms per model-epoch of populations on one device and spread over every device,
    measured in a child process (on a CPU, with `fake_devices` faked devices: they share
    the same cores, so the table shows the overhead of spreading, not a speed-up)."""
    env = {**os.environ}
    if "XLA_FLAGS" not in env:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={fake_devices}"
    return launch.run(
        "--devices_child",
        f"--sizes={sizes}",
        f"--epochs={epochs}",
        module="benchmarks.sweep_speed",
        env=env,
        check=True,
    ).stdout


def _devices_rows(sizes: list[int], epochs: int) -> str:

    dataset = data.load_dataset()
    device = jax.devices()[0]
    lines = [
        f"{jax.device_count()} {device.platform} device(s) ({device.device_kind}), {epochs} "
        "epoch(s) per population.",
        "",
        "| models | devices | ms per model-epoch |",
        "|---:|---:|---:|",
    ]
    for size in sizes:
        for count in sorted({1, jax.device_count()}):
            mesh = parallel.make_mesh(jax.devices()[:count], sweep.POPULATION_AXIS)
            _, per_model_epoch = time_population(size, epochs, dataset, mesh)
            lines.append(f"| {size} | {count} | {1000 * per_model_epoch:.2f} |")
    return "\n".join(lines) + "\n"


def default_sizes() -> str:
    """1, 8, 64 models, and 256 on an accelerator."""
    return "1,8,64" if jax.devices()[0].platform == "cpu" else "1,8,64,256"


def run(sizes: str, epochs: int) -> str:
    """A Markdown table of the populations' costs."""
    dataset = data.load_dataset()
    device = jax.devices()[0]
    lines = [
        f"{device.platform} ({device.device_kind}), {epochs} epochs per population.",
        "",
        "| models | data order | compile (s) | ms per model-epoch | vs 1 model |",
        "|---:|---|---:|---:|---:|",
    ]
    base = None
    for size in (int(s) for s in sizes.split(",")):
        for shared_order in (False, True) if size > 1 else (False,):
            compile_seconds, per_model_epoch = time_population(
                size, epochs, dataset, shared_order=shared_order
            )
            base = base or per_model_epoch
            lines.append(
                f"| {size} | {'shared' if shared_order else 'separate'} | {compile_seconds:.2f} "
                f"| {1000 * per_model_epoch:.1f} | {per_model_epoch / base:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    report.define_counts("sizes", default_sizes().split(","), "The population sizes.")
    flags.DEFINE_integer("epochs", 2, "Epochs per population.", lower_bound=1)
    flags.DEFINE_bool("devices", False, "1 device vs every device.")
    flags.DEFINE_bool("devices_child", False, "(The child process of --devices) measure.")


def main() -> None:
    """Prints the table (--devices: the one over 1 and all devices)."""
    if FLAGS.devices_child:
        progress.emit(_devices_rows([int(s) for s in FLAGS.sizes], FLAGS.epochs))
    elif FLAGS.devices:
        progress.emit(devices_table(",".join(FLAGS.sizes), FLAGS.epochs))
    else:
        progress.emit(run(",".join(FLAGS.sizes), FLAGS.epochs))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
