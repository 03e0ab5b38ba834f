"""Evaluate a finished (or interrupted) run: MSE of the best-validation parameters, and RTE.

``geonorm-jax eval RUN_DIR [--rte]`` calls :func:`evaluate_run`; with ``rte=True`` it adds the
GeoNorm paper's 8 columns (see :mod:`geonorm_jax.train.evaluate` for the protocol) and writes
``RUN_DIR/rte.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax._io import write_json_atomic
from geonorm_jax.train.checkpoint import CheckpointError, RunCheckpoints
from geonorm_jax.train.evaluate import (
    EQUIVARIANCE_COLUMNS,
    RTE_COLUMNS,
    rte_errors,
    summarize_rte,
)
from geonorm_jax.train.provenance import check_provenance
from geonorm_jax.train.rundir import check_resume
from geonorm_jax.train.setup import Setup, build

__all__ = ["evaluate_run", "best_variables", "format_rte_table", "RTE_SEED"]

RTE_SEED = 0  # the transforms are drawn from jax.random.PRNGKey(RTE_SEED)


def best_variables(s: Setup, run_dir: str | Path, stream=None) -> tuple[dict, dict]:
    """``({"params", "batch_stats"} stacked over seeds, meta)``: the best-validation checkpoint,
    or the newest intact interval checkpoint's best parameters if no evaluation happened yet
    or the best checkpoint is damaged (a one-line warning on ``stream``, default stderr).

    Read-only: the checkpoints are opened as a reader (nothing written, no temporary directory
    cleaned up), so it runs safely beside a trainer writing the same run directory.

    Raises:
      ValueError: no checkpoint; :class:`~geonorm_jax.train.checkpoint.CheckpointError` (a
        ``ValueError``): none intact, one line naming each and why.
    """
    stream = stream if stream is not None else sys.stderr
    like_state = s.abstract_state()
    ckpt = RunCheckpoints(run_dir, keep=s.config.train.keep_checkpoints)
    try:
        like = {"params": like_state.params, "batch_stats": like_state.batch_stats}
        best = ckpt.restore_best(like)
        if best is not None:
            return best
        damaged = ckpt.describe_skipped()
        if ckpt.latest_epoch() is None:
            why = f" ({'; '.join(damaged)})" if damaged else ""
            raise ValueError(f"run directory {str(run_dir)!r} has no checkpoint to evaluate"
                             + why)
        try:
            state, meta = ckpt.restore(like_state)
        except CheckpointError as e:
            raise CheckpointError("; ".join([*damaged, str(e)])) from None
        for line in [*damaged, *ckpt.describe_skipped()]:
            stream.write(f"warning: {line}; evaluating the best parameters of interval "
                         f"checkpoint {int(meta['epoch'])}\n")
        return {"params": state.best_params, "batch_stats": state.best_batch_stats}, meta
    finally:
        ckpt.close()


def evaluate_run(
    run_dir: str | Path,
    *,
    rte: bool = False,
    draws: int | None = None,
    translation_scale: float | None = None,
    data_dir=None,
    cache_dir=None,
    progress: bool = False,
) -> dict:
    """Validation/test MSE per seed of the best parameters, and RTE if ``rte``.

    Returns ``{"seeds": [...], "val_mse": [...], "test_mse": [...], "rte": [{column: value}]}``
    (``rte`` per seed, only when requested; N-body task only), plus ``val_<m>`` and
    ``test_<m>`` for the task's further metrics (molecules: ``energy_mae``, ``force_mae``).
    ``draws`` and ``translation_scale`` default to
    the run's ``train.rte_draws`` and ``train.rte_translation_scale``.

    Raises:
      DataMismatchError: the data loaded now differs from the run's ``data.json`` (a
        ``ValueError``; a run without ``data.json`` is evaluated with a one-line note).
    """
    run_dir = Path(run_dir)
    config = check_resume(run_dir, None)
    if rte and config.task != "nbody":  # before loading data and compiling
        raise ValueError(f"--rte: rotation/translation errors of predicted coordinates exist "
                         f"for the nbody task only; this run's task is {config.task!r}")
    s = build(config, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    check_provenance(run_dir, s.provenance, "evaluate", sys.stderr,  # refuses other data
                     getattr(s.task, "legacy_sha256", None))
    best, meta = best_variables(s, run_dir)
    p, bs = best["params"], best["batch_stats"]
    out = {
        "run_dir": str(run_dir),
        "seeds": list(config.train.seeds),
        "best_epoch": meta.get("best_epoch"),
    }
    for split, data in (("val", s.data["valid"]), ("test", s.data["test"])):
        metrics = s.metrics_fn(p, bs, data)[0]
        out[f"{split}_mse"] = _means(metrics["mse"])
        for name in s.task.metrics:
            out[f"{split}_{name}"] = _means(metrics[name])
    if rte and config.task != "nbody":
        raise ValueError(f"--rte: rotation/translation errors of predicted coordinates exist "
                         f"for the nbody task only; this run's task is {config.task!r}")
    if rte:
        draws = config.train.rte_draws if draws is None else draws
        scale = config.train.rte_translation_scale if translation_scale is None \
            else translation_scale
        if draws < 1 or scale < 0:
            raise ValueError(f"--draws must be >= 1 and --translation-scale >= 0; got {draws}, "
                             f"{scale}")
        errors = rte_errors(lambda split: s.eval_fn(p, bs, split), s.data["test"],
                            jax.random.PRNGKey(RTE_SEED), draws=draws, translation_scale=scale,
                            transforms=s.transforms_fn)
        out["rte"] = [
            summarize_rte({k: v[i] for k, v in errors.items()})
            for i in range(len(config.train.seeds))
        ]
        out["rte_protocol"] = {
            "draws": draws,
            "translation_std": float(scale * jnp.std(s.data["test"]["loc"])),
            "translation_scale": scale,
            "test_samples": int(s.data["test"]["loc"].shape[0]),
            "key": f"PRNGKey({RTE_SEED})",
        }
        write_json_atomic(run_dir / "rte.json", out, indent=2)
    return out


def _means(errors) -> list[float]:
    return [float(x) for x in np.asarray(jnp.mean(errors, axis=1))]


def format_rte_table(result: dict) -> str:
    """Per seed: test MSE, the 8 RTE columns (GeoNorm paper Table 1 order) and the two
    equivariance errors (see :mod:`geonorm_jax.train.evaluate`)."""
    columns = ("mse", *RTE_COLUMNS, *EQUIVARIANCE_COLUMNS)
    head = ("seed", *columns)
    rows = [head]
    for seed, row in zip(result["seeds"], result["rte"], strict=True):
        rows.append((str(seed), *(f"{row[k]:.3e}" for k in columns)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
