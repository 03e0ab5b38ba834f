"""The run directory: reading and writing its files, and the per-seed summary made from them.

Layout (written by :func:`geonorm_jax.train.train`)::

    config.json      the RunConfig (``geonorm_jax.train.config``)
    metrics.jsonl    one JSON line per epoch: epoch, step, time, per-seed train_loss, exploded
                     and exploded_at; on evaluation epochs also per-seed val_mse, test_mse,
                     best_val, best_epoch
    checkpoints/     orbax: interval/<epoch> (last k) and best/<epoch> (``checkpoint.py``)
    curves.png       the training curves (``plot.py``)
    data.json        the data's content hash and source (:mod:`geonorm_jax.train.provenance`)
    run.lock         present while a process trains here (:mod:`geonorm_jax.train.lock`)
    summary.json     :func:`summarize`: per seed the best epoch, best validation MSE, test MSE
                     at the best validation epoch and the explosion; mean/std over seeds;
                     wall time

Both the training loop (:mod:`geonorm_jax.train.loop`) and the plots
(:mod:`geonorm_jax.train.plot`) read runs through this module; it imports neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geonorm_jax._io import atomic_write, write_json_atomic
from geonorm_jax.train.config import RunConfig, diff, load_config

__all__ = [
    "METRICS",
    "SUMMARY",
    "read_metrics",
    "write_metrics",
    "write_summary",
    "read_seeds",
    "check_resume",
    "summarize",
    "format_table",
]

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``, one dict per epoch in file order.

    A torn last line (a run killed while writing it) is skipped; a missing file gives ``[]``.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_metrics(run_dir: str | Path, records: list[dict]) -> Path:
    """Replace ``metrics.jsonl`` atomically by ``records``, one JSON line each (resume drops the
    lines after the restored epoch this way)."""

    def write(f):
        for record in records:
            f.write(json.dumps(record) + "\n")

    return atomic_write(Path(run_dir) / METRICS, write, text=True)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    """Write ``summary.json`` (indented JSON, atomically)."""
    return write_json_atomic(Path(run_dir) / SUMMARY, summary, indent=2)


def read_seeds(run_dir: str | Path, count: int) -> list:
    """The seeds of ``config.json`` if there are ``count`` of them, else ``0 .. count-1`` (a run
    directory without a readable config still plots)."""
    try:
        seeds = json.loads((Path(run_dir) / "config.json").read_text())["train"]["seeds"]
        if len(seeds) == count:
            return seeds
    except (OSError, KeyError, ValueError):
        pass
    return list(range(count))


def check_resume(run_dir: str | Path, config: RunConfig | None) -> RunConfig:
    """The config to resume ``run_dir`` with (its ``config.json``).

    Raises:
      ValueError: ``run_dir`` has no ``config.json``, or ``config`` is given and differs from
        the saved one (the message lists each difference as ``saved != requested``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"cannot resume {str(run_dir)!r}: no config.json (not a run directory)")
    saved = load_config(run_dir / "config.json")
    if config is not None:
        changes = diff(saved, config)
        if changes:
            raise ValueError(
                f"cannot resume {str(run_dir)!r} with a different configuration "
                f"(saved != requested): {'; '.join(changes)}"
            )
    return saved


def summarize(config: RunConfig, records: list[dict], **extra) -> dict:
    """Per-seed results from the metrics records.

    For seed ``i``: ``best_epoch`` (from the last evaluation record), ``best_val_mse`` and
    ``test_mse`` at that epoch (the test MSE is the one reported, as in EGNN and the GeoNorm
    paper: test at the best validation epoch), ``final_train_loss``, and the explosion (its
    step and ``epoch = step // steps_per_epoch + 1``; ``exploded_cause`` ``"data"`` or
    ``"model"`` and ``exploded_reason`` when the records carry them). An exploded seed's best
    epoch is from before its explosion (the trainer stops updating its best then). Over seeds:
    ``test_mse_mean`` and ``test_mse_std`` (population std) of the surviving (never exploded)
    seeds' finite test MSEs, beside ``num_exploded`` and ``num_surviving``;
    ``test_mse_mean_all`` averages every seed's finite test MSE. The task's further
    ``test_<m>_mean`` are over surviving seeds, too.

    Args:
      config: the run configuration (seeds, epochs).
      records: :func:`read_metrics` records.
      **extra: copied into the summary (``steps_per_epoch`` defaults to 1 and is used for the
        explosion epoch; ``wall_time``, ``devices``, ``num_params``, ... as given).
    """
    seeds = list(config.train.seeds)
    evals = [r for r in records if "val_mse" in r]
    by_epoch = {r["epoch"]: r for r in evals}
    steps = extra.get("steps_per_epoch") or 1
    last = records[-1] if records else {}
    per_seed = []
    for i, seed in enumerate(seeds):
        best_epoch = evals[-1]["best_epoch"][i] if evals else -1
        best = by_epoch.get(best_epoch)
        exploded = bool(last.get("exploded", [False] * len(seeds))[i])
        exploded_step = int(last["exploded_at"][i]) if exploded else None
        exploded_epoch = exploded_step // steps + 1 if exploded else None
        losses = [r["train_loss"][i] for r in records if r["train_loss"][i] is not None]
        further = {k: (best[k][i] if best else None) for k in _further(evals)}
        cause = next((r["exploded_cause"][i] for r in records
                      if r.get("exploded_cause") and r["exploded_cause"][i]), None)
        per_seed.append({
            "seed": seed,
            "best_epoch": best_epoch if best is not None else None,
            "best_val_mse": best["val_mse"][i] if best else None,
            "test_mse": best["test_mse"][i] if best else None,
            **further,
            "final_train_loss": losses[-1] if losses else None,
            "exploded": exploded,
            "exploded_epoch": exploded_epoch,
            "exploded_step": exploded_step,
            **({"exploded_cause": cause.get("cause"), "exploded_reason": cause.get("reason")}
               if exploded and cause else {}),
        })
    alive = [p for p in per_seed if not p["exploded"]]
    tests = [p["test_mse"] for p in alive if p["test_mse"] is not None]
    tests_all = [p["test_mse"] for p in per_seed if p["test_mse"] is not None]
    means = {}
    for k in _further(evals):
        if k.startswith("test_"):
            values = [p[k] for p in alive if p[k] is not None]
            means[f"{k}_mean"] = float(np.mean(values)) if values else None
    return {
        "epochs_completed": last.get("epoch", 0),
        "epochs": config.train.epochs,
        "seeds": per_seed,
        "test_mse_mean": float(np.mean(tests)) if tests else None,
        "test_mse_std": float(np.std(tests)) if tests else None,
        "num_exploded": sum(p["exploded"] for p in per_seed),
        "num_surviving": len(alive),
        "test_mse_mean_all": float(np.mean(tests_all)) if tests_all else None,
        **means,
        **{k: v for k, v in extra.items() if k != "steps_per_epoch"},
        "steps_per_epoch": steps,
    }


def _further(evals: list[dict]) -> list[str]:
    """The task's further metric keys of evaluation records (``val_<m>``, ``test_<m>``)."""
    if not evals:
        return []
    skip = {"val_mse", "test_mse"}
    return [k for k in evals[-1] if k.startswith(("val_", "test_")) and k not in skip]


def format_table(summary: dict) -> str:
    """The short table printed at the end of a run: one row per seed (best epoch, validation
    and test MSE, explosion) and, for several seeds, the test MSE mean +- std."""
    fmt = lambda x: f"{x:.4e}" if isinstance(x, float) else ("-" if x is None else str(x))
    extra = [k for k in (summary["seeds"][0] if summary["seeds"] else {})
             if k.startswith("test_") and k != "test_mse"]
    rows = [("seed", "best epoch", "val MSE", "test MSE",
             *(k.replace("_", " ") for k in extra), "exploded")]
    for p in summary["seeds"]:
        boom = f"epoch {p['exploded_epoch']}" if p["exploded"] else "no"
        rows.append((str(p["seed"]), fmt(p["best_epoch"]), fmt(p["best_val_mse"]),
                     fmt(p["test_mse"]), *(fmt(p[k]) for k in extra), boom))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary.get("test_mse_mean") is not None and len(summary["seeds"]) > 1:
        boom = summary.get("num_exploded", 0)
        over = f"{len(summary['seeds']) - boom} surviving seeds" if boom else "seeds"
        lines.append(f"test MSE over {over}: {summary['test_mse_mean']:.4e} "
                     f"+- {summary['test_mse_std']:.4e}"
                     + (f" ({boom} exploded, not averaged)" if boom else ""))
    return "\n".join(lines)
