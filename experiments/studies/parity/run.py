r"""The parity study (`make parity`, docs/parity.md): does mlp_jax reach d2l's accuracy? The
chapter's protocol (SGD 0.1, batch 256, 10 epochs, test accuracy), both models, over many seeds,
in mlp_jax and in a faithful PyTorch loop with the same initial distributions, written to
results/parity.md.

  python -m experiments.studies.parity.run [--seeds=30] [--out=results/parity.md]

d2l's plots are single runs (0.853 scratch, 0.861 concise); a single run's accuracy varies
by about +-0.008 over seeds, so the question is one of distributions: their means, standard
deviations and standard errors, and the difference of the means in standard errors.
The PyTorch loop: tensors resident in memory, a fresh torch.randperm order each epoch,
batches of 256 with a partial last one, torch.optim.SGD(0.1), nn.CrossEntropyLoss; weights
from normal(0, 0.01) for the scratch model (d2l 5.2.1) and LeCun-normal (a truncated normal,
as Flax's nn.Dense draws them) for the concise one, zero biases.
"""

import os
from pathlib import Path

from absl import flags

from benchmarks import report, train_speed
from mlp_jax import data, errors, files, progress, sweep
from mlp_jax.config import load_experiment

FLAGS = flags.FLAGS
MODELS = {"scratch": "experiments/mlp_scratch.py", "concise": "experiments/mlp_concise.py"}
D2L_PLOTTED = {"scratch": 0.853, "concise": 0.861}
EPOCHS = 10
_SEEDS_VARIABLE = "PARITY_SEEDS"


def mlp_jax_accuracies(model: str, seeds: int, dataset=None) -> list[float]:
    """Test accuracies of the chapter's run of `model` for seeds 0..seeds-1 (one vmapped
    population, equal to separate runs: tests/unit/sweep_test.py)."""
    configs = []
    for seed in range(seeds):
        config = load_experiment(MODELS[model])
        config.seed = seed
        configs.append(config)
    dataset = dataset or data.load_dataset()
    results = sweep.train_population(configs, dataset, max_population=seeds, progress=False)
    return [r["test_acc"] for r in results]


def torch_accuracies(model: str, seeds: int, epochs: int = EPOCHS) -> list[float]:
    """Test accuracies of the faithful PyTorch loop for seeds 0..seeds-1."""
    import torch
    from torch import nn

    x_train, y_train, x_test, y_test = train_speed.torch_data("cpu")
    accuracies = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        for layer in (net[0], net[2]):
            if model == "scratch":
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
            else:
                train_speed.lecun_normal_(layer)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            order = torch.randperm(len(y_train))
            for i in range(0, len(order), 256):
                idx = order[i : i + 256]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(net(x_train[idx]), y_train[idx]).backward()
                optimizer.step()
        with torch.no_grad():
            accuracies.append(float((net(x_test).argmax(1) == y_test).float().mean()))
    return accuracies


def run_torch_scratch(epochs: int) -> dict:
    """The faithful PyTorch loop, scratch initialisation, over $PARITY_SEEDS seeds."""
    return {"test_acc": torch_accuracies("scratch", int(os.environ[_SEEDS_VARIABLE]), epochs)}


def run_torch_concise(epochs: int) -> dict:
    """The faithful PyTorch loop, LeCun-normal initialisation, over $PARITY_SEEDS seeds."""
    return {"test_acc": torch_accuracies("concise", int(os.environ[_SEEDS_VARIABLE]), epochs)}


def measure(seeds: int, epochs: int = EPOCHS) -> dict:
    """{(model, implementation): test accuracies, or the reason it was skipped}."""
    dataset = data.load_dataset()
    results = {}
    for model in MODELS:
        results[model, "mlp_jax"] = mlp_jax_accuracies(model, seeds, dataset)
        row = train_speed.run_peer_process(
            f"torch_{model}",
            epochs,
            env={_SEEDS_VARIABLE: str(seeds)},
            module="experiments.studies.parity.run",
        )
        results[model, "PyTorch"] = row.get("test_acc", f"skipped: {row.get('skipped')}")
    return results


def markdown(results: dict) -> str:
    """The distributions, the differences and d2l's plotted runs as Markdown."""
    lines = [
        "| model | implementation | seeds | mean | std | standard error | min | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    summaries = {}
    for (model, implementation), accs in results.items():
        if isinstance(accs, str):
            lines.append(f"| {model} | {implementation} | {accs} | | | | | |")
            continue
        s = summaries[model, implementation] = report.summarize(accs)
        lines.append(
            f"| {model} | {implementation} | {s['n']} | {s['mean']:.4f} | {s['std']:.4f} "
            f"| {s['se']:.4f} | {min(accs):.4f} | {max(accs):.4f} |"
        )
    lines += [
        "",
        "| model | mlp_jax - PyTorch | in standard errors | d2l's plotted run | "
        "d2l's run in mlp_jax's standard deviations | mlp_jax seeds at or above it |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, plotted in D2L_PLOTTED.items():
        ours = summaries.get((model, "mlp_jax"))
        theirs = summaries.get((model, "PyTorch"))
        if ours is None:
            continue
        difference = in_se = "n/a"
        if theirs is not None:
            difference = f"{ours['mean'] - theirs['mean']:+.4f}"
            in_se = f"{report.difference_in_standard_errors(ours, theirs):+.2f}"
        above = sum(a >= plotted for a in results[model, "mlp_jax"])
        lines.append(
            f"| {model} | {difference} | {in_se} | {plotted:.3f} "
            f"| {(plotted - ours['mean']) / ours['std']:+.2f} | {above} of {ours['n']} |"
        )
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("seeds", 30, "Seeds per model and library.", lower_bound=1)
    flags.DEFINE_string("out", "results/parity.md", "The Markdown file to write.")
    flags.DEFINE_integer("epochs", EPOCHS, "Epochs per run.", lower_bound=1)
    flags.DEFINE_string("peer", None, "(A PyTorch peer's child process) run it, print JSON.")


def main() -> None:
    """Measures and writes the Markdown file (or runs a PyTorch peer)."""
    if FLAGS.peer:
        train_speed.peer_main(globals()[f"run_{FLAGS.peer}"], FLAGS.epochs)
        return
    text = "\n".join(
        [
            "# Parity with d2l: the chapter's protocol over seeds\n",
            report.header(),
            f"Test accuracy after {FLAGS.epochs} epochs (SGD 0.1, batch 256).\n",
            markdown(measure(FLAGS.seeds, FLAGS.epochs)),
        ]
    )
    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(out, text)
    progress.show(text)


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
