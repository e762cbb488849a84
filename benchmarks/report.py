"""What every report shares: the machine and versions its numbers belong to, statistics over
seeds, and Markdown tables. Used by the benchmarks and by the studies' reports."""

import contextlib
import importlib.metadata
import math
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags

# The CPU flags that decide matrix-product speed, in the order they are printed.
MATRIX_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "bf16",
    "sve",
)
BFLOAT16_UNIT_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# Where a --quick run's outputs go when their flags are left at their defaults: a reduced
# run never replaces the full one's results (results/, a study's tuned config).
QUICK_OUTPUTS = "runs/quick"


def output_path(flag: str, flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """The path the command's flag `flag` names; in a --quick run that leaves it at its
    default, the same path under QUICK_OUTPUTS."""
    path = flag_values[flag].value
    if flag_values.quick and not flag_values[flag].present:
        return os.path.join(
            QUICK_OUTPUTS, os.path.relpath(path, "/") if os.path.isabs(path) else path
        )
    return path


def define_counts(name: str, default: list[str], help_text: str) -> None:
    """Defines the list flag `name` of whole numbers >= 1 (sizes, unrolls), refused in one
    line when a word is anything else (`int()` of it was a traceback)."""
    flags.DEFINE_list(name, default, help_text)
    flags.register_validator(
        name,
        lambda words: (
            bool(words)
            and len(set(words)) == len(words)
            and all(w.isascii() and w.isdigit() and int(w) for w in words)
        ),
        "give whole numbers >= 1, each once, separated by commas",
    )


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    with contextlib.suppress(OSError, StopIteration):
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 "flags", Arm "Features"); empty where unreadable."""
    with contextlib.suppress(OSError, StopIteration):
        line = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("flags", "Features"))
        )
        return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bfloat16_units(flags: frozenset[str]) -> bool:
    """Whether the CPU computes bfloat16 products natively."""
    return bool(flags & BFLOAT16_UNIT_FLAGS)


def describe_processor() -> str:
    """The accelerator's name, or the CPU's model with its matrix flags and whether it has
    bfloat16 units."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.platform} {device.device_kind}"
    flags = cpu_flags()
    present = ", ".join(f for f in MATRIX_FLAGS if f in flags) or "none of note"
    units = "has" if has_bfloat16_units(flags) else "has no"
    return f"{cpu_model()} (flags: {present}; {units} bfloat16 units)"


PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "clu", "torch", "keras")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(lead: str = "Measured") -> str:
    """The machine, date and versions the numbers belong to (`lead` names what happened
    there: a report whose rows each name their own machine was only written there)."""
    device = jax.devices()[0]
    cpu = describe_processor() if device.platform == "cpu" else cpu_model()
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    return (
        f"{lead} {time.strftime('%Y-%m-%d')} on {cpu} ({jax.local_device_count()} JAX device(s): "
        f"{device.platform}, {device.device_kind}); {versions}.\n"
    )


def summarize(values) -> dict:
    """{"n", "mean", "std" (sample, ddof 1), "se" (std / sqrt(n))} of a list of numbers."""
    values = np.asarray(values, np.float64)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    return {"n": n, "mean": float(values.mean()), "std": std, "se": std / math.sqrt(n)}


def difference_in_standard_errors(a: dict, b: dict) -> float:
    """(mean of a - mean of b) / sqrt(se_a^2 + se_b^2): the difference of two summaries in
    units of the standard error of that difference (about 2 or more: unlikely to be noise)."""
    return (a["mean"] - b["mean"]) / math.hypot(a["se"], b["se"])


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
