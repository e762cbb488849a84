r"""The best-plain-MLP study (`make best`, docs/best.md), written to results/best.md and
results/best.png.

  python -m experiments.studies.best.run [--stage=all|finals|ablation|report]

`make best` first runs the search (`python -m experiments.studies.search.run
--config=experiments/studies/best/best_search.py`), which chooses the recipe on held-out
training images and writes it to experiments/studies/best/mlp_best.py and its record to
results/best/tune.json. This module then measures the recipe:

- finals: `make train CONFIG=experiments/studies/best/mlp_best.py` for seeds 0, 1 and 2, each a
  whole process timed from outside, each in its own workdir (runs/mlp_best_seed<S>); its test
  accuracy is its last epoch's. A seed already recorded for this recipe in
  results/best/finals.json is not trained again, and an interrupted run resumes from its
  checkpoint (marked "resumed").
- ablation: the recipe with one ingredient removed at a time, trained as the search's last rung
  trained it (on 50,000 training images, judged on the 10,000 held out; the test split is not
  read). The recipe's own row is that very run of the search, found in its cache; each removal
  is cached beside it, so an interrupted ablation resumes where it stopped, and each row is
  written to results/best/ablation.json as it ends.
- report: results/best.md and results/best.png from what the two stages recorded; an ablation
  recorded for another recipe (an earlier search's) is left out, and the report names the
  removals not yet measured and the command that measures them.
"""

import functools
import json
import subprocess
import time
from pathlib import Path

import ml_collections
from absl import flags
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchmarks import report
from mlp_jax import data, errors, files, plots, progress, sweep
from mlp_jax.config import load_experiment
from mlp_jax.errors import UserError
from mlp_jax.search import read_record as read_search_record

FLAGS = flags.FLAGS
ROOT = Path(__file__).resolve().parents[3]
RECIPE = "experiments/studies/best/mlp_best.py"
SEARCH = "experiments/studies/best/best_search.py"
RESULTS_DIR = "results/best"  # The committed records; the report is results/best.md.
# The recipe's fields are reported where they differ from the chapter's concise MLP's.
CONCISE = "experiments/mlp_concise.py"
SEEDS = (0, 1, 2)
# The goal and moonshot for the 3-seed mean test accuracy.
GOAL, MOONSHOT = 0.915, 0.920
# Published and earlier figures the recipe is compared with (test accuracy).
REFERENCES = {
    "d2l 5.2, from scratch (one run)": 0.853,
    "d2l 5.2, concise (one run)": 0.861,
    "Fashion-MNIST benchmark's best MLP": 0.8833,
    "experiments/studies/search/mlp_tuned.py (make tune, 3 seeds)": 0.9099,
}
# Each ingredient and the change that removes it, in the order the ablation trains them (the
# augmentations the search draws first, so that an ablation cut short has measured those);
# only the ingredients the recipe has are ablated.
INGREDIENTS = {
    "MixUp": {"mixup_alpha": 0.0},
    "CutMix": {"cutmix_alpha": 0.0},
    "random erasing": {"augment_erase": 0.0},
    "random shifts": {"augment_shift": 0},
    "horizontal flips": {"augment_flip": False},
    "affine distortions": {"augment_rotate": 0.0, "augment_scale": 0.0},
    "elastic distortions": {"augment_elastic": 0.0},
    "label smoothing": {"label_smoothing": 0.0},
    "EMA of the weights": {"ema_decay": 0.0},
    "dropout": {"dropout": 0.0},
    "weight decay": {"weight_decay": 0.0},
    "cosine schedule": {"schedule": "constant"},
}
# What finals.json and ablation.json hold that is read back (a file edited by hand into
# another shape is one line naming it, not a traceback where it is first indexed).
FINALS_SHAPE = {
    "recipe": dict,
    "extra_args": [str],
    "processor": str,
    "runs": [
        {
            "seed": int,
            "test_acc": float,
            "epochs": int,
            "epoch_seconds": float,
            "wall_seconds": float,
            "resumed": bool,
            "date": str,
        }
    ],
}
ABLATION_SHAPE = {
    "recipe": dict,
    "epochs": int,
    "validation_size": int,
    "rows": {str: {"change": dict, "val_acc": float, "train_loss": float, "val_loss": float}},
}


def load_recipe(path: str | Path = RECIPE) -> ml_collections.ConfigDict:
    """The experiment file's config (the file the search wrote)."""
    return load_experiment(ROOT / path)


def recipe_fields(recipe: ml_collections.ConfigDict) -> dict:
    """The recipe's fields that differ from the chapter's concise MLP."""
    base = load_experiment(CONCISE)
    return {k: v for k, v in sorted(recipe.to_dict().items()) if k not in base or base[k] != v}


def ablations(recipe: ml_collections.ConfigDict) -> dict[str, dict]:
    """{ingredient: the change removing it} for every ingredient the recipe has."""
    return {
        name: change
        for name, change in INGREDIENTS.items()
        if any(recipe[k] != v for k, v in change.items())
    }


def held_out_config(recipe, epochs: int, validation_size: int, change: dict | None = None):
    """The recipe (with `change`) as the search's last rung trains it."""
    config = ml_collections.ConfigDict(recipe.to_dict())
    config.update({"num_epochs": epochs, "validation_size": validation_size, **(change or {})})
    return config


def run_ablation(
    recipe, epochs: int, dataset: data.Dataset, cache_dir, record_path: Path | None = None
) -> dict:
    """Validation accuracy of the recipe and of each removal after `epochs`, trained on
    `dataset`'s training split and judged on its validation split (it has no test split).
    The record is written to `record_path` after every row, so that the rows an interrupted
    ablation measured are reported. A row whose config the record at `record_path` already
    trained is not trained again, whichever recipe that record ablated (the run cache may not
    have survived: a fresh clone holds results/ but not runs/; and one recipe's removal may
    be the next recipe itself, or one of its removals)."""
    validation_size = len(dataset.validation.labels)
    changes = {"(none: the recipe)": {}, **ablations(recipe)}
    recorded = _recorded_rows(record_path) if record_path else {}
    record = {
        "recipe": recipe_fields(recipe),
        "epochs": epochs,
        "validation_size": validation_size,
        "rows": {},
    }
    rows = record["rows"]
    for name, change in changes.items():
        config = held_out_config(recipe, epochs, validation_size, change)
        if (kept := recorded.get(_signature(config))) is not None:
            rows[name] = {**kept, "change": change}
        else:
            rows[name] = {
                "change": change,
                **_last_epoch(config, dataset, cache_dir),
                "processor": report.describe_processor(),
                "date": time.strftime("%Y-%m-%d"),
            }
            progress.show(f"ablation: {name}: val acc {rows[name]['val_acc']:.4f}")
        if record_path is not None:
            files.write_record(record_path, record)
    return record


def _recorded_rows(path: Path) -> dict[str, dict]:
    """The rows of the ablation recorded at `path` (if any), keyed by the config each trained."""
    ablation = files.read_record(path, ABLATION_SHAPE)
    if ablation is None:
        return {}
    recipe = ml_collections.ConfigDict({**load_experiment(CONCISE).to_dict(), **ablation["recipe"]})
    return {
        _signature(
            held_out_config(recipe, ablation["epochs"], ablation["validation_size"], row["change"])
        ): row
        for row in ablation["rows"].values()
    }


def _signature(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def _last_epoch(config, dataset: data.Dataset, cache_dir) -> dict:
    """`config` trained on `dataset` (or found in the cache): its last epoch's metrics."""
    (result,) = sweep.train_population([config], dataset, cache_dir=cache_dir, evaluate_test=False)
    last = result["history"][-1]
    return {
        "val_acc": last["val_acc"],
        "val_loss": last["val_loss"],
        "train_loss": last["train_loss"],
    }


def recorded_ablation(recipe, path: Path) -> dict | None:
    """The ablation `path` holds if it was measured for this very recipe, else None: a search
    that changes the recipe leaves the last one's ablation behind, and it must not be reported
    as the new one's."""
    ablation = files.read_record(path, ABLATION_SHAPE) or {}
    return ablation if ablation.get("recipe") == recipe_fields(recipe) else None


def train_final(seed: int, workdir: Path, extra_args: tuple[str, ...]) -> dict:
    """One `make train CONFIG=experiments/studies/best/mlp_best.py` run: its wall seconds, the
    seconds of its epochs, and its last epoch's test accuracy."""
    args = " ".join((f"--config.seed={seed}", *extra_args))
    t0 = time.perf_counter()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "train",
            f"CONFIG={RECIPE}",
            f"WORKDIR={workdir}",
            f"ARGS={args}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(
            f"make train failed for seed {seed}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {
        "seed": seed,
        "test_acc": history[-1]["val_acc"],
        "epochs": len(history),
        "wall_seconds": wall,
        "epoch_seconds": sum(r["train_seconds"] for r in history),
        "resumed": "resumed from" in result.stdout,
        "date": time.strftime("%Y-%m-%d"),
    }


def run_finals(
    recipe, results_dir: Path, runs_dir: Path, seeds=SEEDS, extra_args: tuple[str, ...] = ()
) -> dict:
    """Every seed's final run, reusing those finals.json already holds for this recipe (and
    these `extra_args`, --config.KEY=VALUE overrides for quick runs): {"recipe", "extra_args",
    "processor", "runs"}."""
    path = results_dir / "finals.json"
    fields = recipe_fields(recipe)
    record = files.read_record(path, FINALS_SHAPE) or {}
    if record.get("recipe") != fields or record.get("extra_args") != list(extra_args):
        record = {
            "recipe": fields,
            "extra_args": list(extra_args),
            "processor": report.describe_processor(),
            "runs": [],
        }
    done = {run["seed"] for run in record["runs"]}
    for seed in seeds:
        if seed in done:
            continue
        run = train_final(seed, runs_dir / f"mlp_best_seed{seed}", extra_args)
        progress.show(
            f"final: seed {seed}: test acc {run['test_acc']:.4f} in {run['wall_seconds']:.0f} s"
        )
        record["runs"].append(run)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_record(path, record)
    return record


def _ablation_section(recipe, ablation: dict | None, search: dict) -> list[str]:
    """The ablation's table of the rows measured for this recipe, and what to run for the rest."""
    measured = ablation["rows"] if ablation else {}
    missing = [name for name in ablations(recipe) if name not in measured]
    epochs = search["history"][-1][0]["epochs"]
    minutes = search["seconds"] / len(search["candidates"]) * len(missing) / 60
    todo = (
        f"`python -m experiments.studies.best.run --stage=ablation` trains the {len(missing)} "
        f"removals not yet measured for this recipe ({', '.join(missing)}) for {epochs} epochs "
        f"each, about {minutes:.0f} min at the search's pace.\n"
    )
    if not measured:
        return [todo]
    base = measured["(none: the recipe)"]["val_acc"]
    ablation_rows = [
        [
            name,
            ", ".join(f"{k}={v}" for k, v in row["change"].items()) or "",
            f"{row['val_acc']:.4f}",
            f"{row['val_acc'] - base:+.4f}",
            f"{row['train_loss']:.4f}",
            f"{row['val_loss']:.4f}",
        ]
        for name, row in measured.items()
    ]
    return [
        f"Each row trains {ablation['epochs']} epochs (the search's last rung) on "
        f"{60_000 - ablation['validation_size']:,} training images, seed 0, and is judged on "
        f"the {ablation['validation_size']:,} held out; the test split is not read.\n",
        report.table(
            ["removed", "change", "val acc", "vs recipe", "train loss", "val loss"],
            ablation_rows,
        ),
        _where_measured(measured),
        *([todo] if missing else []),
    ]


def _where_measured(rows: dict) -> str:
    """Which processor trained which rows, and when (rows of a resumed ablation may come from
    several machines)."""
    machines: dict[tuple[str, str], list[str]] = {}
    for name, row in rows.items():
        key = (
            row.get("processor", "a processor not recorded"),
            row.get("date", "date not recorded"),
        )
        machines.setdefault(key, []).append(name)
    parts = [
        f"{', '.join(names)} on {processor} ({date})"
        for (processor, date), names in machines.items()
    ]
    return "Measured: " + "; ".join(parts) + ".\n"


def markdown(recipe, finals: dict, ablation: dict | None, search: dict) -> str:
    """The report: the recipe, its test accuracy over seeds (`finals`, as run_finals returns
    it) against the references, the ablation (None: not measured for this recipe) and the
    search that chose it."""
    processor, finals = finals["processor"], finals["runs"]
    summary = report.summarize([run["test_acc"] for run in finals])
    fields = ", ".join(f"{k}={v}" for k, v in recipe_fields(recipe).items())
    seeds = ", ".join(str(run["seed"]) for run in finals)
    met = "met" if summary["mean"] >= GOAL else "not met"
    moon = "met" if summary["mean"] >= MOONSHOT else "not met"
    final_rows = [
        [
            str(run["seed"]),
            f"{run['test_acc']:.4f}",
            str(run["epochs"]),
            f"{run['epoch_seconds']:.0f}",
            f"{run['wall_seconds']:.0f}" + (" (resumed)" if run["resumed"] else ""),
            run["date"],
        ]
        for run in finals
    ]
    reference_rows = [[name, f"{acc:.4f}"] for name, acc in REFERENCES.items()]
    reference_rows.append([f"**{RECIPE}** ({summary['n']} seeds)", f"**{summary['mean']:.4f}**"])
    history = search["history"]
    if len(history) > 1:
        rungs = " -> ".join(f"{len(rung)} for {rung[0]['epochs']}" for rung in history)
        plan = f"successive halving {rungs} epochs"
    else:
        plan = f"each trained for {history[0][0]['epochs']} epochs"
    return "\n".join(
        [
            "# The best plain MLP on Fashion-MNIST\n",
            report.header("Report written")
            + "The final runs and the ablation rows name the processor and date they ran on.\n",
            "## The recipe\n",
            f"`{RECIPE}`: the concise MLP (dense layers on the flattened image) with {fields}.\n",
            f"## Test accuracy: `make train CONFIG={RECIPE}`, seeds {seeds}\n",
            f"Each a whole `make train` process on {processor}.\n",
            report.table(
                ["seed", "test acc", "epochs", "epochs (s)", "whole run (s)", "date"], final_rows
            ),
            f"Mean {summary['mean']:.4f} +- {summary['std']:.4f} (std over {summary['n']} seeds). "
            f"Goal {GOAL}: {met}; moonshot {MOONSHOT}: {moon}.\n",
            report.table(["model", "test acc"], reference_rows),
            "## What each ingredient buys: the recipe with one removed\n",
            *_ablation_section(recipe, ablation, search),
            "## The search\n",
            f"`python -m experiments.studies.search.run --config={SEARCH}` ({search['date']}): "
            f"{len(search['candidates'])} candidates, {plan}, "
            f"{search['seconds'] / 60:.0f} min of training (results/best/tune.json, tune.png). "
            "The last rung, best first:\n",
            _last_rung_table(search),
        ]
    )


def _last_rung_table(search: dict) -> str:
    """The candidates of the search's last rung, best first: their drawn fields and their
    validation accuracy (at the rung's end, and at their best epoch where curves are kept)."""
    fields = list(search["candidates"][0])
    curves = all("curve" in r for r in search["history"][-1])
    rows = []
    for r in search["history"][-1]:
        row = [str(search["candidates"][r["candidate"]][k]) for k in fields]
        row.append(f"{r['val_acc']:.4f}")
        if curves:
            best = max(r["curve"])
            row.append(f"{best:.4f} ({r['curve'].index(best) + 1})")
        rows.append(row)
    header = [*fields, "val acc", *(["best epoch's"] if curves else [])]
    return report.table(header, rows)


def plot(finals: list[dict], ablation: dict | None, path) -> None:
    """Each seed's test accuracy against the references, and beside it the ablation if it
    has been measured for this recipe."""
    fig = Figure(figsize=(10 if ablation else 5, 5.2), dpi=120)
    if ablation:
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    else:
        left = fig.subplots()
    for (name, acc), color in zip(
        REFERENCES.items(), ("tab:red", "tab:orange", "tab:purple", "tab:gray"), strict=True
    ):
        left.axhline(acc, color=color, lw=1, ls="--", label=f"{name}: {acc:.3f}")
    accs = [run["test_acc"] for run in finals]
    left.plot(range(len(accs)), accs, "o", color="tab:blue", label="mlp_best, one point per seed")
    left.axhline(GOAL, color="black", lw=0.8, label=f"goal {GOAL}")
    left.set_xticks(range(len(accs)), [f"seed {run['seed']}" for run in finals])
    left.set_ylim(0.845, 0.93)
    left.set_ylabel("test accuracy")
    left.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    left.grid(alpha=0.3)
    if ablation:
        _plot_ablation(right, ablation)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _plot_ablation(right, ablation: dict) -> None:
    names = list(ablation["rows"])
    values = [ablation["rows"][n]["val_acc"] for n in names]
    right.barh(range(len(names)), values, color=["tab:blue"] + ["tab:gray"] * (len(names) - 1))
    right.set_yticks(
        range(len(names)), ["recipe"] + [f"without {n}" for n in names[1:]], fontsize=8
    )
    right.invert_yaxis()
    right.set_xlim(min(values) - 0.01, max(values) + 0.012)
    right.xaxis.set_major_locator(MaxNLocator(5))
    for y, value in enumerate(values):
        right.annotate(
            f"{value:.4f} ({value - values[0]:+.4f})", (value, y), fontsize=7, va="center"
        )
    right.axvline(values[0], color="tab:blue", lw=0.8)
    right.set_xlabel(f"validation accuracy after {ablation['epochs']} epochs (held-out images)")
    right.grid(alpha=0.3, axis="x")


def _required_record(path: Path, command: str, read) -> dict:
    """The record at `path`, which the report needs, read by `read`: a missing one names the
    command that writes it."""
    record = read(path)
    if record is None:
        raise UserError(f"{path}: missing; `{command}` writes it")
    return record


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_enum("stage", "all", ["all", "finals", "ablation", "report"], "What to run.")
    flags.DEFINE_string(
        "results_dir",
        RESULTS_DIR,
        f"The stages' records (under the root), and the report where not {RESULTS_DIR}.",
    )
    flags.DEFINE_string("runs_dir", "runs", "The final runs' workdirs (under the root).")
    flags.DEFINE_string("search_workdir", "runs/best_search", "The search's cache.")


def main() -> None:
    """Runs the stages the flags name and writes the report."""
    for flag in ("results_dir", "runs_dir", "search_workdir"):
        if files.is_remote(FLAGS[flag].value):  # It made a folder "gs:" in the clone.
            raise UserError(
                f"--{flag}={FLAGS[flag].value}: this study keeps its records and runs in "
                "local folders (under the clone, unless absolute); give one"
            )
    results_dir, runs_dir = ROOT / FLAGS.results_dir, ROOT / FLAGS.runs_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    recipe, search = load_recipe(), load_experiment(SEARCH)
    if FLAGS.stage in ("all", "finals"):
        run_finals(recipe, results_dir, runs_dir)
    if FLAGS.stage in ("all", "ablation"):
        dataset = data.load_held_out_dataset(
            recipe.data_dir, search.train.validation_size, recipe.split_seed
        )
        run_ablation(
            recipe,
            search.rungs[-1],
            dataset,
            ROOT / FLAGS.search_workdir,
            results_dir / "ablation.json",
        )
    finals = _required_record(
        results_dir / "finals.json",
        "python -m experiments.studies.best.run --stage=finals",
        functools.partial(files.read_record, shape=FINALS_SHAPE),
    )
    ablation = recorded_ablation(recipe, results_dir / "ablation.json")
    search_record = _required_record(
        results_dir / "tune.json", "make best (the search comes first)", read_search_record
    )
    text = markdown(recipe, finals, ablation, search_record)
    # The committed report beside the committed records' folder; another folder's, inside it
    # (not beside it: a user's own best.md there was replaced).
    report_dir = results_dir.parent if FLAGS.results_dir == RESULTS_DIR else results_dir
    files.write_atomically(report_dir / "best.md", text)
    plot(finals["runs"], ablation, report_dir / "best.png")
    progress.show(text)


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
