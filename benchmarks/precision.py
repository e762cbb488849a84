r"""Does bfloat16 cost accuracy? The chapter's run of both models (SGD 0.1, batch 256, 10
epochs, test accuracy) over several seeds in float32 and in bfloat16 mixed precision
(config.compute_dtype), each set of seeds one vmapped population (mlp_jax.sweep).

  python -m benchmarks.precision [--seeds=10] [--epochs=10]

Prints per model and dtype the mean, standard deviation and standard error of the test
accuracy, and the bfloat16 - float32 difference in standard errors of that difference
(within 2.5: not told apart from seed noise, the goal of issue 13).
"""

from absl import flags

from benchmarks import report
from mlp_jax import data, errors, progress, sweep
from mlp_jax.config import load_experiment

FLAGS = flags.FLAGS

MODELS = {"scratch": "experiments/mlp_scratch.py", "concise": "experiments/mlp_concise.py"}
DTYPES = ("float32", "bfloat16")
# The largest |difference| in standard errors that counts as within seed noise.
NOISE_BOUND = 2.5


def seed_accuracies(num_seeds: int, epochs: int, dataset=None) -> list[dict]:
    """Test accuracies per model and dtype over seeds 0..num_seeds-1, with the training
    seconds of each population."""
    dataset = dataset or data.load_dataset()
    rows = []
    for name, experiment in MODELS.items():
        for dtype in DTYPES:
            configs = []
            for seed in range(num_seeds):
                config = load_experiment(experiment)
                config.seed, config.num_epochs, config.compute_dtype = seed, epochs, dtype
                configs.append(config)
            results = sweep.train_population(
                configs, dataset, max_population=num_seeds, progress=False
            )
            rows.append(
                {
                    "model": name,
                    "dtype": dtype,
                    "test_acc": [r["test_acc"] for r in results],
                    "train_seconds": sum(r["train_seconds"] for r in results),
                }
            )
    return rows


def markdown(rows: list[dict], epochs: int) -> str:
    """The distributions and each model's bfloat16 - float32 difference as Markdown."""
    lines = [
        f"Test accuracy after {epochs} epochs; one population per row.",
        "",
        "| model | compute dtype | seeds | mean | std | standard error | training (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    summaries = {}
    for r in rows:
        s = summaries[r["model"], r["dtype"]] = report.summarize(r["test_acc"])
        lines.append(
            f"| {r['model']} | {r['dtype']} | {s['n']} | {s['mean']:.4f} | {s['std']:.4f} "
            f"| {s['se']:.4f} | {r['train_seconds']:.1f} |"
        )
    lines += ["", "| model | bfloat16 - float32 | in standard errors | within noise (<= 2.5) |"]
    lines.append("|---|---:|---:|---|")
    for model in MODELS:
        low, full = summaries[model, "bfloat16"], summaries[model, "float32"]
        z = report.difference_in_standard_errors(low, full)
        verdict = "yes" if abs(z) <= NOISE_BOUND else "no"
        lines.append(f"| {model} | {low['mean'] - full['mean']:+.4f} | {z:+.2f} | {verdict} |")
    return "\n".join(lines) + "\n"


def run(num_seeds: int = 10, epochs: int = 10) -> str:
    """Measures and returns the Markdown."""
    return markdown(seed_accuracies(num_seeds, epochs), epochs)


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("seeds", 10, "Seeds per dtype.", lower_bound=1)
    flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)


def main() -> None:
    """Prints the tables."""
    progress.emit(run(FLAGS.seeds, FLAGS.epochs))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
