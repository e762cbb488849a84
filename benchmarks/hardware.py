r"""The chapter's hardware exercises, measured: aligned vs unaligned matrix products, memory
bandwidth, and framework (nn.Dense) vs scratch (self.param) models across sizes.

  python -m benchmarks.hardware [--quick]

Timings are medians over repetitions after a warm-up, each ended by block_until_ready.
"""

import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from mlp_jax import errors, progress

FLAGS = flags.FLAGS

MATMUL_SIZES = (1024, 1025, 1026, 1028, 1032, 4096, 4097, 4100, 4104)
QUICK_MATMUL_SIZES = (128, 129, 136)


def median_seconds(fn, *args, min_reps: int = 5, budget: float = 1.0) -> float:
    """Median wall time of `fn(*args)` over at least `min_reps` runs or `budget` seconds."""
    jax.block_until_ready(fn(*args))  # Warm-up: compile and first touch.
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return float(np.median(times))


def _timing_budget(quick: bool) -> float:
    """Seconds each timing runs for at least: with `quick` (the tests), its minimum of runs
    alone, since the tables' numbers are not what such a run checks."""
    return 0.0 if quick else 1.0


def matmul_table(sizes, dtypes=("float32", "bfloat16"), quick: bool = False) -> list[dict]:
    """Square products n x n @ n x n: median seconds and TFLOP/s per size and dtype."""
    rows = []
    matmul = jax.jit(jnp.matmul)
    for dtype in dtypes:
        for n in sizes:
            keys = jax.random.split(jax.random.key(n), 2)
            a, b = (jax.random.normal(k, (n, n), dtype) for k in keys)
            seconds = median_seconds(matmul, a, b, budget=_timing_budget(quick))
            rows.append(
                {"dtype": dtype, "n": n, "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}
            )
    return rows


def copy_bandwidth(megabytes: int = 256, quick: bool = False) -> dict:
    """Bytes read plus written per second by an elementwise pass over a large float32 array."""
    x = jnp.ones(megabytes * 2**20 // 4, jnp.float32)
    add_one = jax.jit(lambda v: v + 1.0)
    seconds = median_seconds(add_one, x, budget=_timing_budget(quick))
    host = np.ones_like(np.asarray(x))
    out = np.empty_like(host)
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(out, host)
        t.append(time.perf_counter() - t0)
    return {
        "megabytes": megabytes,
        "jax_gb_per_s": 2 * x.nbytes / seconds / 1e9,
        "numpy_copy_gb_per_s": 2 * host.nbytes / float(np.median(t)) / 1e9,
    }


def memory_transfer_rate() -> str:
    """The memory's configured transfer rate as dmidecode reports it, or why it is unknown."""
    try:
        out = subprocess.run(
            ["dmidecode", "-t", "memory"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown (dmidecode unavailable: {e})"
    speeds = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if "Speed:" in line]
    speeds = [s for s in speeds if s and s.lower() not in ("unknown", "none")]
    return speeds[0] if speeds else "unknown (dmidecode reports no speed on this machine)"


def framework_vs_scratch(widths, depths, quick: bool = False) -> list[dict]:
    """Seconds per training epoch for the scratch and concise models across sizes."""
    import optax

    from mlp_jax import data, steps
    from mlp_jax.config import load_module

    scratch = load_module("experiments/mlp_scratch.py").MLPScratch
    concise = load_module("experiments/mlp_concise.py").MLP

    train, _ = data.load_fashion_mnist()
    if quick:
        train = data.Split(train.images[:4096], train.labels[:4096])
    train = jax.device_put(train)
    epoch = jax.jit(steps.train_epoch)  # The default options: batches of 256.
    rows = []
    shapes = [(w, 1) for w in widths] + [(widths[0], d) for d in depths if d != 1]
    for width, depth in shapes:
        row = {"width": width, "depth": depth}
        for name, cls in (("scratch", scratch), ("concise", concise)):
            state = steps.create_train_state(
                cls(num_hiddens=width, num_layers=depth), optax.sgd(0.1), 0
            )
            row[name] = median_seconds(lambda s: epoch(s, train)[1], state, min_reps=3, budget=0.0)
        row["ratio"] = row["concise"] / row["scratch"]
        rows.append(row)
    return rows


def matmul_markdown(matmuls) -> list[str]:
    """The matrix-product rows as Markdown lines."""
    lines = [
        "### Matrix products",
        "",
        "| dtype | n | median ms | TFLOP/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['dtype']} | {r['n']} | {1e3 * r['seconds']:.2f} | {r['tflops']:.3f} |"
        for r in matmuls
    ]
    return lines


def bandwidth_markdown(bandwidth, rate) -> list[str]:
    """The memory-bandwidth paragraph as Markdown lines."""
    return [
        "### Memory bandwidth",
        "",
        f"An elementwise pass over {bandwidth['megabytes']} MB (read + write): "
        f"{bandwidth['jax_gb_per_s']:.1f} GB/s in JAX, {bandwidth['numpy_copy_gb_per_s']:.1f} GB/s "
        f"for numpy's copy. Memory transfer rate: {rate}.",
    ]


def markdown(matmuls, bandwidth, rate, models) -> str:
    """All three tables as Markdown."""
    device = jax.devices()[0]
    lines = [f"Device: {device.platform} ({device.device_kind}).", ""]
    lines += matmul_markdown(matmuls) + [""] + bandwidth_markdown(bandwidth, rate)
    lines += [
        "",
        "### Framework (nn.Dense) vs scratch (self.param): seconds per training epoch",
        "",
        "| width | depth | scratch (s) | concise (s) | concise / scratch |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in models:
        times = f"{r['scratch']:.3f} | {r['concise']:.3f} | {r['ratio']:.2f}"
        lines.append(f"| {r['width']} | {r['depth']} | {times} |")
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> str:
    """Measures everything and returns the Markdown."""
    sizes = QUICK_MATMUL_SIZES if quick else MATMUL_SIZES
    widths, depths = ((64, 128), (1, 2)) if quick else ((256, 512, 1024, 2048, 4096), (1, 2, 4, 8))
    return markdown(
        matmul_table(sizes, quick=quick),
        copy_bandwidth(16 if quick else 256, quick),
        memory_transfer_rate(),
        framework_vs_scratch(widths, depths, quick),
    )


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_bool("quick", False, "Tiny sizes, for tests.")


def main() -> None:
    """Prints the tables."""
    progress.emit(run(FLAGS.quick))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
