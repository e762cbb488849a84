r"""Seconds per model-epoch for vmapped populations of 1, 8 and 64 models (256 on a GPU).

  python -m benchmarks.sweep_speed [--sizes=1,8,64] [--epochs=2]

Each population trains the chapter's scratch MLP (784-256-10, SGD 0.1, batch 256) on
Fashion-MNIST with validation after every epoch, through `mlp_jax.sweep`; compilation is
timed apart. The last column is the cost per model-epoch relative to a population of 1.
"""

import argparse
import time

import jax

from experiments import mlp_scratch
from mlp_jax import data, sweep


def time_population(size: int, epochs: int, dataset) -> tuple[float, float]:
    """(compile seconds, steady seconds per model-epoch) for a population of `size`."""
    configs = []
    for seed in range(size):
        config = mlp_scratch.get_config()
        config.seed, config.num_epochs = seed, epochs
        configs.append(config)
    t0 = time.perf_counter()
    sweep.train_population(configs, dataset, max_population=size)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep.train_population(configs, dataset, max_population=size)
    steady = time.perf_counter() - t0
    return first - steady, steady / (size * epochs)


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
        "| models | compile (s) | ms per model-epoch | vs 1 model |",
        "|---:|---:|---:|---:|",
    ]
    base = None
    for size in (int(s) for s in sizes.split(",")):
        compile_seconds, per_model_epoch = time_population(size, epochs, dataset)
        base = base or per_model_epoch
        ratio = per_model_epoch / base
        lines.append(
            f"| {size} | {compile_seconds:.2f} | {1000 * per_model_epoch:.1f} | {ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=default_sizes())
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(run(args.sizes, args.epochs))


if __name__ == "__main__":
    main()
