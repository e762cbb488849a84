r"""bfloat16 on a CPU: what XLA:CPU's library paths (oneDNN, XNNPACK, YNNPACK) give the
chapter's two kinds of matrix product and its whole epoch, against float32, side by side.

  python -m benchmarks.cpu_bfloat16 [--epochs=5] [--quick]

Each setting of XLA_FLAGS runs in a process of its own (XLA reads them once): the forward
product (256 x 784) @ (784 x 256) and the weight-gradient product x.T @ d, (784 x 256) @
(256 x 256), jit-compiled with float32 accumulation, in GFLOP/s; then the chapter's scratch
model trained `--epochs` epochs through `python -m mlp_jax.main`, the epochs' seconds. The
header names the CPU and whether it has bfloat16 units (avx512_bf16, amx_bf16).
"""

import json
import os
import tempfile
import time
from pathlib import Path

from absl import flags

from benchmarks import launch, report
from mlp_jax import errors, progress

FLAGS = flags.FLAGS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (
    "",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
)
DTYPES = ("float32", "bfloat16")


def product_rates(repeats: int) -> dict[str, list[float]]:
    """{dtype: [forward GFLOP/s, weight-gradient GFLOP/s]} in this process."""
    import jax  # noqa: PLC0415  (in the child, after XLA_FLAGS is set)
    import jax.numpy as jnp  # noqa: PLC0415

    key = jax.random.key(0)
    x, w = jax.random.normal(key, (256, 784)), jax.random.normal(key, (784, 256))
    d = jax.random.normal(key, (256, 256))
    flops = 2 * 256 * 784 * 256
    rates = {}
    for name in DTYPES:
        dtype = jnp.dtype(name)
        forward = jax.jit(
            lambda a, b, t=dtype: jnp.dot(
                a.astype(t), b.astype(t), preferred_element_type=jnp.float32
            )
        )
        gradient = jax.jit(
            lambda a, b, t=dtype: jnp.dot(
                a.astype(t).T, b.astype(t), preferred_element_type=jnp.float32
            )
        )
        rates[name] = [flops / _seconds(forward, x, w, repeats) / 1e9]
        rates[name].append(flops / _seconds(gradient, x, d, repeats) / 1e9)
    return rates


def _seconds(fn, a, b, repeats: int) -> float:
    fn(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn(a, b)
    result.block_until_ready()
    return (time.perf_counter() - start) / repeats


def epoch_seconds(flags: str, dtype: str, epochs: int, workdir: Path) -> float:
    """The epochs' seconds of the scratch model trained in a child under `flags`."""
    result = launch.run(
        "--config=experiments/mlp_scratch.py",
        f"--config.num_epochs={epochs}",
        f"--config.compute_dtype={dtype}",
        f"--workdir={workdir}",
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": flags},
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("phases (s): "))
    return float(dict(item.split() for item in line[12:].split(", "))["epochs"])


def run(epochs: int, quick: bool) -> str:
    """The table: every setting, both dtypes, and bfloat16's speed-up over float32."""
    settings = SETTINGS[:2] if quick else SETTINGS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, flags in enumerate(settings):
            child = launch.run(
                f"--rates={5 if quick else 200}",
                module="benchmarks.cpu_bfloat16",
                cwd=ROOT,
                env={**os.environ, "XLA_FLAGS": flags},
                check=True,
            )
            rates = json.loads(child.stdout.strip().splitlines()[-1])
            seconds = {
                dtype: epoch_seconds(flags, dtype, epochs, Path(tmp) / f"{number}-{dtype}")
                for dtype in DTYPES
            }
            rows.append(
                [
                    f"`{flags}`" if flags else "(none)",
                    *(f"{rates[t][0]:.0f} / {rates[t][1]:.0f}" for t in DTYPES),
                    *(f"{seconds[t]:.2f}" for t in DTYPES),
                    f"{seconds['float32'] / seconds['bfloat16']:.2f}x",
                ]
            )
    header = [
        "XLA_FLAGS",
        "float32 forward / weight-gradient GFLOP/s",
        "bfloat16 forward / weight-gradient GFLOP/s",
        f"float32 {epochs} epochs (s)",
        f"bfloat16 {epochs} epochs (s)",
        "bfloat16's speed-up",
    ]
    return report.header() + "\n" + report.table(header, rows)


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 5, "Epochs per run.", lower_bound=1)
    flags.DEFINE_bool("quick", False, "Two settings, for tests.")
    flags.DEFINE_integer("rates", None, "(The child process) print the products' rates.")


def main() -> None:
    """Prints the table (--rates: the products' rates, as the child process)."""
    if FLAGS.rates:
        progress.emit(json.dumps(product_rates(FLAGS.rates)))
        return
    progress.emit(run(1 if FLAGS.quick else FLAGS.epochs, FLAGS.quick))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
