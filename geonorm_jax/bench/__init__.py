"""Benchmarks (``geonorm-jax bench``): train-step speed, FLOP rate and memory against N,
the cost of each normalization, N-body generation throughput, and one paper-preset epoch.

Modules: :mod:`~geonorm_jax.bench.model` (one train step of one configuration),
:mod:`~geonorm_jax.bench.norm_cost`, :mod:`~geonorm_jax.bench.data`,
:mod:`~geonorm_jax.bench.scaling` (exponent fit, plot), :mod:`~geonorm_jax.bench.suite`
(presets, resume, results file), :mod:`~geonorm_jax.bench.machine`.
"""

from geonorm_jax.bench.cli import add_parser, run_bench
from geonorm_jax.bench.model import ModelCase, run_case, step_flops
from geonorm_jax.bench.scaling import fit_exponent, scaling_fits
from geonorm_jax.bench.suite import PRESETS, evaluate_targets, format_tables, run_suite

__all__ = [
    "add_parser", "run_bench", "ModelCase", "run_case", "step_flops", "fit_exponent",
    "scaling_fits", "PRESETS", "evaluate_targets", "format_tables", "run_suite",
]
