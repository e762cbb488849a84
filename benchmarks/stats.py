"""Summaries of results over seeds: mean, standard deviation, standard error, and how far
apart two such distributions are in units of their combined standard error."""

import math

import numpy as np


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
