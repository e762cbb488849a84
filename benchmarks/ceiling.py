r"""The machine's ceiling for the chapter's arithmetic: how fast it multiplies the matrices of
one training epoch, in float32 and in bfloat16, with nothing else in the way.

  python -m benchmarks.ceiling [--quick]

A training step of an MLP at batch B does, per dense layer, a forward product (B x in x out)
and a weight-gradient product (in x B x out), and, for every layer but the first, the
gradient of its input (B x out x in); the gradient of the images is never needed, so XLA
drops it. An epoch made of only those products, compiled as one scan in JAX and as a loop of
`torch.mm` in PyTorch (where installed), runs at the highest rate the machine reaches for
those shapes; the best of the two is the ceiling that `benchmarks.train_speed` divides each
peer's achieved FLOP/s by. The CPU's model and its matrix-relevant flags are read too: a
CPU without bfloat16 units (avx512_bf16 or amx_bf16 on x86, bf16 on Arm) converts bfloat16
to float32 and gains nothing from it.
"""

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import report
from mlp_jax import errors, progress

FLAGS = flags.FLAGS

DTYPES = ("float32", "bfloat16")
CHAPTER_SHAPE = {"name": "chapter 784-256-10, batch 256", "hidden": 256, "layers": 1}
TUNED_SHAPE = {"name": "tuned 784-1024x3-10, batch 256", "hidden": 1024, "layers": 3}


def _layers(hidden: int, layers: int, inputs: int = 784, outputs: int = 10):
    sizes = [inputs] + [hidden] * layers + [outputs]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def forward_products(batch: int, hidden: int, layers: int = 1):
    """(m, k, n) of every matrix product of an MLP's forward pass."""
    return [(batch, fan_in, fan_out) for fan_in, fan_out in _layers(hidden, layers)]


def step_products(batch: int, hidden: int, layers: int = 1):
    """(m, k, n) of every matrix product in one training step of an MLP: the forward pass,
    the weight gradients, and the input gradients of every layer but the first."""
    weights = [(fan_in, batch, fan_out) for fan_in, fan_out in _layers(hidden, layers)]
    inputs = [(batch, fan_out, fan_in) for fan_in, fan_out in _layers(hidden, layers)[1:]]
    return forward_products(batch, hidden, layers) + weights + inputs


def flops(products) -> int:
    """Floating-point operations of a list of (m, k, n) products: 2 m k n each."""
    return sum(2 * m * k * n for m, k, n in products)


def train_flops_per_example(hidden: int = 256, layers: int = 1) -> int:
    """FLOPs of one training example through an MLP's matrix products."""
    return flops(step_products(1, hidden, layers))


def eval_flops_per_example(hidden: int = 256, layers: int = 1) -> int:
    """FLOPs of one evaluated example (the forward products only)."""
    return flops(forward_products(1, hidden, layers))


def _operands(products, dtype, library: str):
    rng = np.random.default_rng(0)
    pairs = [
        (rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
        for m, k, n in products
    ]
    if library == "jax":
        return [(jnp.asarray(a, dtype), jnp.asarray(b, dtype)) for a, b in pairs]
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    return [
        (torch.from_numpy(a).to(device, torch_dtype), torch.from_numpy(b).to(device, torch_dtype))
        for a, b in pairs
    ]


def jax_epoch_seconds(products, dtype: str, steps: int, reps: int = 5) -> float:
    """Median seconds of `steps` steps of only these products, compiled as one scan."""
    operands = _operands(products, dtype, "jax")

    @jax.jit
    def epoch(operands):
        def body(carry, _):
            # The barrier keeps XLA from hoisting the loop-invariant products out of the scan.
            operands, total = carry
            operands = jax.lax.optimization_barrier(operands)
            total += sum(jnp.sum(a @ b, dtype=jnp.float32) for a, b in operands)
            return (operands, total), None

        (_, total), _ = jax.lax.scan(body, (operands, jnp.float32(0)), None, length=steps)
        return total

    jax.block_until_ready(epoch(operands))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(epoch(operands))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def torch_epoch_seconds(products, dtype: str, steps: int, reps: int = 5) -> float:
    """Median seconds of `steps` steps of only these products as `torch.mm` calls."""
    import torch

    operands = _operands(products, dtype, "torch")
    outputs = [
        torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device) for a, b in operands
    ]

    def epoch():
        for _ in range(steps):
            for (a, b), out in zip(operands, outputs, strict=True):
                torch.mm(a, b, out=out)
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    epoch()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(shape: dict, batch: int = 256, steps: int = 50) -> list[dict]:
    """The ceiling of one model shape over `steps` steps: GFLOP/s per dtype and library
    (None where PyTorch is missing), and the best of the libraries."""
    products = step_products(batch, shape["hidden"], shape["layers"])
    total = flops(products) * steps
    rows = []
    for dtype in DTYPES:
        row = {"shape": shape["name"], "dtype": dtype}
        row["jax"] = total / jax_epoch_seconds(products, dtype, steps) / 1e9
        row["torch"] = None
        with contextlib.suppress(ImportError):
            row["torch"] = total / torch_epoch_seconds(products, dtype, steps) / 1e9
        row["best"] = max(r for r in (row["jax"], row["torch"]) if r is not None)
        rows.append(row)
    return rows


def run(quick: bool = False) -> list[dict]:
    """The ceiling of the chapter's shape and of the tuned model's (the chapter's only, over
    fewer steps, with `quick`)."""
    if quick:
        return measure(CHAPTER_SHAPE, steps=5)
    return [row for shape in (CHAPTER_SHAPE, TUNED_SHAPE) for row in measure(shape)]


def chapter_ceiling(rows: list[dict]) -> dict[str, float]:
    """GFLOP/s of the chapter's shape per dtype: the best library's."""
    return {r["dtype"]: r["best"] for r in rows if r["shape"] == CHAPTER_SHAPE["name"]}


def markdown(rows: list[dict]) -> str:
    """The ceiling as a Markdown table, with the processor it was measured on."""
    lines = [
        f"Processor: {report.describe_processor()}.",
        "",
        "| model shape | dtype | JAX GFLOP/s | PyTorch GFLOP/s | ceiling (best) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        torch_rate = "not installed" if r["torch"] is None else f"{r['torch']:.0f}"
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['jax']:.0f} | {torch_rate} | {r['best']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_bool("quick", False, "The chapter's shape, briefly.")


def main() -> None:
    """Prints the table."""
    progress.emit(markdown(run(FLAGS.quick)))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
