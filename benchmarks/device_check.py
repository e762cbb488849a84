r"""`make device-check`: the one-call accelerator check, written to results/bench_gpu.md.

  python -m benchmarks.device_check [--out=results/bench_gpu.md] [--quick]

Made for the GPU machine's own Python (JAX, no TensorFlow, no network: see
benchmarks/device_check.sh) and a budget of 8 minutes; `--quick` runs the same code with tiny
sizes on a CPU, as the test suite does. What it measures, each in this run:

- the command line's chapter runs of both models (compile seconds, the epochs' seconds, test
  accuracy, the whole process), then resumption of one of them and `--mode=eval`;
- the launch knobs (`benchmarks.knobs`): the scratch model's 10 epochs under scan_unroll 1,
  4 and 16 and 1 or 10 epochs per program, in float32 and bfloat16, each checked to give
  the parameters of unroll 1 with one epoch per program;
- the whole `make train` process with a warm compilation cache (`benchmarks.startup`);
- the export served on the device by a process with JAX alone, against --mode=predict;
- the device's ceiling for the chapter's matrix products in float32 and bfloat16, and the
  peers on the same device as fractions of it: mlp_jax in both dtypes, the flax-style Python
  loop, speed-minded PyTorch (float32 and bfloat16 autocast) and d2l-style PyTorch (skipped
  where PyTorch is missing);
- vmapped populations of 1, 64, 256 and 1024 models, with separate data orders and with one
  shared order (ms per model-epoch);
- float32 and bfloat16 matrix products at 1024-1032 and 4096-4104, and memory bandwidth;
- none / pmap / shard_map on the devices there are;
- the speedrun recipes (experiments/studies/speedrun/recipe_085.py, recipe_090.py) over 3
  seeds: mean test accuracy and training seconds (per-epoch evaluation included,
  compilation apart);
- the goals for an H200, each marked met or not.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This process and the runs it starts share the device: none may take most of its memory
# up front, as JAX does by default on a GPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import (  # noqa: E402
    ceiling,
    hardware,
    knobs,
    launch,
    parallel_speed,
    recipes,
    report,
    startup,
    sweep_speed,
    train_speed,
)
from mlp_jax import data, errors, files, progress, writers  # noqa: E402

FLAGS = flags.FLAGS
ROOT = Path(__file__).resolve().parents[1]
CHAPTER_MODELS = ("mlp_scratch", "mlp_concise")
# Goals of issues 11 and 29 for an H200: the chapter's 10 epochs (s), the factor over the d2l
# and flax-style loops, ms per model-epoch of a 256-model population, and the whole process
# of `make train` with a warm compilation cache (s).
GOAL_EPOCHS_SECONDS, GOAL_PEER_FACTOR, GOAL_POPULATION_MS = 0.08, 50.0, 0.6
GOAL_PROCESS_SECONDS = 5.0
# Goals of issue 14 for an H200: training seconds to each target.
GOAL_SPEEDRUN_SECONDS = {0.85: 0.020, 0.90: 0.5}
SPEEDRUN_SEEDS = 3
DEVICE_MATMUL_SIZES = (1024, 1025, 1026, 1028, 1032, 4096, 4097, 4098, 4100, 4104)
PEERS = ("mlp_jax", "mlp_jax_bf16", "flax_loop", "torch_fast", "torch_fast_bf16", "torch_d2l")
POPULATIONS = (1, 64, 256, 1024)


def _cli(*args: str) -> tuple[launch.Finished, float]:
    """`python -m mlp_jax.main ARGS` from the repository root, and its wall seconds."""
    result = launch.run(*args, cwd=ROOT, timeout=600, check=True)
    return result, result.seconds


def _compile_seconds(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if "compiled in" in line)
    return float(line.rsplit("compiled in", 1)[1].split()[0])


def chapter_runs(epochs: int, workdir: Path) -> list[dict]:
    """Both chapter models through the command line, then one resumed and evaluated."""
    rows = []
    for name in CHAPTER_MODELS:
        run_dir = workdir / name
        result, whole = _cli(
            f"--config=experiments/{name}.py",
            f"--workdir={run_dir}",
            f"--config.num_epochs={epochs}",
        )
        records = writers.JsonlLog(run_dir / "metrics.jsonl").read()
        rows.append(
            {
                "run": name,
                "compile": _compile_seconds(result.stdout),
                "epochs": sum(r["train_seconds"] for r in records),
                "test_acc": records[-1]["val_acc"],
                "whole": whole,
            }
        )
    run_dir = workdir / CHAPTER_MODELS[0]
    result, whole = _cli(
        f"--config=experiments/{CHAPTER_MODELS[0]}.py",
        f"--workdir={run_dir}",
        f"--config.num_epochs={epochs + 1}",
    )
    resumed = f"resumed from the checkpoint of epoch {epochs}" in result.stdout
    last = writers.JsonlLog(run_dir / "metrics.jsonl").read()[-1]
    evaluated, eval_whole = _cli("--mode=eval", f"--workdir={run_dir}")
    test = json.loads(evaluated.stdout.splitlines()[-1])
    rows.append(
        {
            "run": f"{CHAPTER_MODELS[0]} resumed for epoch {epochs + 1}",
            "compile": _compile_seconds(result.stdout),
            "epochs": last["train_seconds"],
            "test_acc": last["val_acc"],
            "whole": whole,
            "ok": resumed and last["epoch"] == epochs + 1,
        }
    )
    rows.append(
        {
            "run": "--mode=eval of it",
            "test_acc": test["test_acc"],
            "whole": eval_whole,
            "ok": test["epoch"] == epochs + 1 and abs(test["test_acc"] - last["val_acc"]) < 1e-6,
        }
    )
    return rows


UNROLLS = (1, 4, 16)
# With --quick, what trains in this process (knobs, populations, speedrun recipes) trains on
# the first images of each split: the same programs, a tenth of the epochs' work. The command
# line's runs and the peers' processes read the whole dataset, as ever.
QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES = 6_000, 1_000


def first_images(dataset: data.Dataset, train: int, test: int) -> data.Dataset:
    """The first `train` training images of `dataset` and the first `test` of the others."""

    def first(split: data.Split, count: int) -> data.Split:
        return data.Split(split.images[:count], split.labels[:count])

    return data.Dataset(
        first(dataset.train, train), first(dataset.validation, test), first(dataset.test, test)
    )


def knob_rows(dataset, epochs: int, quick: bool) -> list[dict]:
    """`benchmarks.knobs` on this device: every unroll and epochs per program in both
    dtypes (unroll 1 and 4, 1 and 2 epochs per program of 2 epochs, with `quick`)."""
    if quick:
        return knobs.measure(dataset, 2, UNROLLS[:2], (1, 2))
    return knobs.measure(dataset, epochs, UNROLLS, (1, epochs))


# Serves an export on this process's default device with JAX alone, printing the classes.
_SERVE = (
    "import sys, jax, numpy as np; "
    "e = jax.export.deserialize(open(sys.argv[1], 'rb').read()); "
    "print(np.asarray(e.call(np.load(sys.argv[2]))).argmax(-1).tolist())"
)


def export_served(workdir: Path, dataset) -> dict:
    """`--mode=export` of a trained workdir, served on this device by a process with JAX
    alone, against `--mode=predict`'s classes for the same 64 test images."""
    batch = workdir / "batch.npy"
    np.save(batch, dataset.test.images[:64])
    _, export_whole = _cli("--mode=export", f"--workdir={workdir}")
    # A plain interpreter, not `python -m`, so that nothing of mlp_jax is imported.
    served = subprocess.run(
        [sys.executable, "-c", _SERVE, str(workdir / "export" / "model.jaxexport"), str(batch)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    predicted, _ = _cli("--mode=predict", f"--workdir={workdir}", str(batch))
    classes = [
        data.CLASS_NAMES.index(line.split(": ")[1].rsplit(" (then")[0].rsplit(" ", 1)[0])
        for line in predicted.stdout.strip().splitlines()
    ]
    return {
        "run": f"--mode=export, served on {jax.devices()[0].platform} without mlp_jax",
        "test_acc": float(np.mean(np.array(classes) == dataset.test.labels[:64])),
        "whole": export_whole,
        "ok": json.loads(served.stdout.strip().splitlines()[-1]) == classes,
    }


def chapter_table(rows: list[dict], epochs: int) -> str:
    """The command line's runs as Markdown."""
    lines = [
        "| run | compile (s) | epochs (s) | test acc | whole process (s) | check |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        check = {True: "ok", False: "FAILED"}.get(r.get("ok"), "")
        compile_s = f"{r['compile']:.2f}" if "compile" in r else ""
        epochs_s = f"{r['epochs']:.3f}" if "epochs" in r else ""
        lines.append(
            f"| {r['run']} | {compile_s} | {epochs_s} | {r['test_acc']:.4f} | "
            f"{r['whole']:.1f} | {check} |"
        )
    return (
        f"{epochs} epochs each (epochs (s): the epochs' training time, compilation apart).\n\n"
        + ("\n".join(lines) + "\n")
    )


def _goal_row(goal: str, measured: float, unit: str, met: bool) -> str:
    return f"| {goal} | {measured:.3f} {unit} | {'yes' if met else 'no'} |"


def goals(
    chapter: list[dict],
    knob: list[dict],
    peers: list[dict],
    population_ms: dict[tuple[int, bool], float],
    warm_process: float,
) -> str:
    """Each H200 goal with the measured value and whether it is met."""
    lines = ["| goal | measured | met |", "|---|---:|---|"]
    best = min(r["epochs"] for r in chapter if r["run"] in CHAPTER_MODELS)
    goal = f"chapter's 10 epochs <= {GOAL_EPOCHS_SECONDS} s (default config, training only)"
    lines.append(_goal_row(goal, best, "s", best <= GOAL_EPOCHS_SECONDS))
    # Only a variant that trains the plain path's parameters counts.
    fastest = min((r for r in knob if r["same_params"] is not False), key=lambda r: r["loop"])
    goal = (
        f"chapter's 10 epochs <= {GOAL_EPOCHS_SECONDS} s, fastest knobs (scan_unroll="
        f"{fastest['scan_unroll']}, epochs_per_program={fastest['epochs_per_program']}, "
        f"{fastest['dtype']}; the whole loop, validation included)"
    )
    lines.append(_goal_row(goal, fastest["loop"], "s", fastest["loop"] <= GOAL_EPOCHS_SECONDS))
    ours = next((p for p in peers if p["peer"] == "mlp_jax" and "seconds" in p), None)
    for peer in ("torch_d2l", "flax_loop"):
        theirs = next((p for p in peers if p["peer"] == peer), None)
        if ours is None or theirs is None or "seconds" not in theirs:
            lines.append(f"| >= {GOAL_PEER_FACTOR:.0f}x faster than {peer} | not measured | no |")
            continue
        factor = theirs["seconds"] / ours["seconds"]
        met = "yes" if factor >= GOAL_PEER_FACTOR else "no"
        lines.append(f"| >= {GOAL_PEER_FACTOR:.0f}x faster than {peer} | {factor:.1f}x | {met} |")
    for (size, shared), ms in sorted(population_ms.items()):
        if size == 256:
            order = "one shared data order" if shared else "separate data orders"
            goal = f"256 models ({order}) <= {GOAL_POPULATION_MS} ms per model-epoch"
            lines.append(_goal_row(goal, ms, "ms", ms <= GOAL_POPULATION_MS))
    goal = f"whole `make train` process, warm compilation cache <= {GOAL_PROCESS_SECONDS} s"
    lines.append(_goal_row(goal, warm_process, "s", warm_process <= GOAL_PROCESS_SECONDS))
    return "\n".join(lines) + "\n"


def speedrun_table(dataset, quick: bool) -> str:
    """Each speedrun recipe over SPEEDRUN_SEEDS seeds (1 seed of 1 epoch with `quick`), with
    its H200 goal: the target reached as a mean, within the goal's training seconds."""
    seeds = 1 if quick else SPEEDRUN_SEEDS
    lines = [
        "| target | seeds | mean test acc | training (s) | compile (s) | goal (s) | met |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for target, goal in GOAL_SPEEDRUN_SECONDS.items():
        config = recipes.recipe_config(target)
        if quick:
            config.num_epochs = 1
        r = recipes.over_seeds(config, dataset, seeds)
        met = "yes" if r["acc"]["mean"] >= target and r["seconds"] <= goal else "no"
        lines.append(
            f"| {target:.2f} | {seeds} | {r['acc']['mean']:.4f} | {r['seconds']:.4f} "
            f"| {r['compile']:.2f} | {goal} | {met} |"
        )
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_string("out", "results/bench_gpu.md", "The Markdown file to write.")
    flags.DEFINE_bool("quick", False, "Tiny sizes, for the test suite.")


def main() -> None:
    """Runs every section and writes the Markdown file."""
    epochs = 1 if FLAGS.quick else 10
    started = time.perf_counter()
    sections = ["# The one-call accelerator check\n", report.header()]
    out = Path(report.output_path("out"))
    out.parent.mkdir(parents=True, exist_ok=True)

    def add(*new_sections: str) -> None:
        """Adds sections and rewrites the report, so a run cut short keeps what it measured."""
        sections.extend(new_sections)
        files.write_atomically(out, "\n".join(sections))
        progress.show(new_sections[-1])

    dataset = data.load_dataset()
    if FLAGS.quick:
        dataset = first_images(dataset, QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES)
    with tempfile.TemporaryDirectory() as tmp:
        chapter = chapter_runs(epochs, Path(tmp))
        served = export_served(Path(tmp) / CHAPTER_MODELS[0], dataset)
        add(
            "## The chapter through the command line\n",
            chapter_table(chapter, epochs),
            "The export served on the device: its classes those of --mode=predict (test acc: "
            "of its 64 images).\n\n" + chapter_table([served], epochs),
        )
    first_run, warm_run = startup.timed_runs(epochs)
    add(
        "## The whole process, first with a fresh compilation cache, then warm\n",
        startup.markdown(first_run, warm_run),
    )
    knob = knob_rows(dataset, epochs, FLAGS.quick)
    add(
        "## Knobs: scan unroll, epochs per program, dtype\n",
        knobs.markdown(knob, 2 if FLAGS.quick else epochs),
    )

    ceiling_rows = ceiling.run(FLAGS.quick)
    peer_names = PEERS[:3] if FLAGS.quick else PEERS
    peers = [train_speed.run_peer_process(peer, epochs) for peer in peer_names]
    add(
        "## The ceiling: an epoch of only the chapter's matrix products\n",
        ceiling.markdown(ceiling_rows),
        f"## Peers on the same device ({epochs} epochs)\n",
        train_speed.table(peers, epochs, ceiling.chapter_ceiling(ceiling_rows)) + "\n",
    )

    sizes = (1, 2) if FLAGS.quick else POPULATIONS
    population_ms = {}
    lines = [
        "| models | data order | compile (s) | ms per model-epoch |",
        "|---:|---|---:|---:|",
    ]
    for size in sizes:
        for shared in (False, True) if size > 1 else (False,):
            compile_seconds, per_model_epoch = sweep_speed.time_population(
                size, 1 if FLAGS.quick else 2, dataset, shared_order=shared
            )
            population_ms[size, shared] = 1000 * per_model_epoch
            lines.append(
                f"| {size} | {'shared' if shared else 'separate'} | {compile_seconds:.2f} | "
                f"{population_ms[size, shared]:.3f} |"
            )
    add("## Vmapped populations (mlp_jax.sweep)\n", "\n".join(lines) + "\n")

    matmul_sizes = hardware.QUICK_MATMUL_SIZES if FLAGS.quick else DEVICE_MATMUL_SIZES
    bandwidth = hardware.copy_bandwidth(16 if FLAGS.quick else 1024, FLAGS.quick)
    lines = hardware.matmul_markdown(hardware.matmul_table(matmul_sizes, quick=FLAGS.quick))
    lines.append("")
    lines += hardware.bandwidth_markdown(bandwidth, hardware.memory_transfer_rate())
    add("## Matrix products and memory bandwidth\n", "\n".join(lines) + "\n")

    counts = ",".join(str(n) for n in sorted({1, jax.device_count()}))
    add("## Parallel modes\n", parallel_speed.run(counts))

    add("## Speedrun recipes\n", speedrun_table(dataset, FLAGS.quick))
    if not FLAGS.quick:  # The goals are for the full sizes.
        add(
            "## Goals (for an H200)\n",
            goals(chapter, knob, peers, population_ms, warm_run["whole"]),
        )
    add(f"Whole check: {time.perf_counter() - started:.0f} s.\n")


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
