"""The run directory: reading and writing its files, and the per-seed summary made from them.

Layout (written by :func:`geonorm_jax.train.train`)::

    config.json      the RunConfig (``geonorm_jax.train.config``)
    metrics.jsonl    one JSON line per epoch: epoch, step, time, per-seed train_loss, exploded
                     and exploded_at; on evaluation epochs also per-seed val_mse, test_mse,
                     best_val, best_epoch
    checkpoints/     orbax: interval/<epoch> (last k) and best/<epoch> (``checkpoint.py``);
                     config.json: the configuration recorded at the start (hash and whole
                     config; a later edit of RUN_DIR/config.json is refused on resume/eval)
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

import hashlib
import json
from pathlib import Path

import numpy as np

from geonorm_jax._io import atomic_write, write_json_atomic
from geonorm_jax.train.config import RunConfig, config_dict, diff, load_config, merge

__all__ = [
    "METRICS",
    "SUMMARY",
    "read_metrics",
    "resume_records",
    "write_metrics",
    "write_summary",
    "read_seeds",
    "check_resume",
    "config_sha256",
    "write_config_record",
    "read_config_record",
    "summarize",
    "format_table",
]

METRICS = "metrics.jsonl"
#: the configuration recorded at the start of a run (:func:`write_config_record`)
CONFIG_RECORD = "checkpoints/config.json"
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


def _record_ok(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("epoch"), int)
            and isinstance(record.get("train_loss"), list))


def resume_records(run_dir: str | Path, epoch: int) -> list[dict]:
    """The ``metrics.jsonl`` records of epochs ``1..epoch``, for resuming from the checkpoint
    of ``epoch``; lines after it (epochs that will be trained again) are dropped.

    The one repair made: a torn *last* line, if the records before it reach ``epoch`` (the
    line of an epoch after the checkpoint, cut by a kill while it was written; that epoch is
    trained again). Anything else that would lose history is refused.

    Raises:
      ValueError: ``metrics.jsonl`` is missing, unreadable, has a damaged line before its
        last, or lacks a record of one of the epochs ``1..epoch`` (one line naming the file,
        the line or epochs, and what to do).
    """
    path = Path(run_dir) / METRICS
    where = f"cannot resume {str(Path(run_dir))!r}"
    advice = ("restore it from a backup, or start a new run (--out); resuming would lose the "
              "training history silently")
    if epoch <= 0:
        return []
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{where}: {METRICS} is missing but the checkpoint of epoch {epoch} "
                         f"exists; {advice}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: {METRICS} is unreadable ({type(e).__name__}: {e}); "
                         f"{advice}") from None
    lines = text.splitlines()
    records, torn = [], None
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not _record_ok(record):
            torn = number
            if number != len(lines):
                raise ValueError(f"{where}: {METRICS} line {number} of {len(lines)} is damaged "
                                 f"(not an epoch record); {advice}")
            continue
        records.append(record)
    kept = [r for r in records if r["epoch"] <= epoch]
    epochs = [r["epoch"] for r in kept]
    if epochs != list(range(1, epoch + 1)):
        missing = sorted(set(range(1, epoch + 1)) - set(epochs))
        what = (f"has no record of epoch{'s' if len(missing) > 1 else ''} "
                f"{_ranges(missing)}" if missing else "has its epochs out of order")
        if torn is not None:
            what += f" (its last line, {torn}, is torn)"
        raise ValueError(f"{where}: {METRICS} {what}, but the checkpoint of epoch {epoch} "
                         f"exists; {advice}")
    return kept


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


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


def config_sha256(config: RunConfig) -> str:
    """SHA-256 of the canonical JSON of ``config`` (:func:`~.config.config_dict`, sorted keys)."""
    text = json.dumps(config_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_config_record(run_dir: str | Path, config: RunConfig) -> Path:
    """Record the configuration the run's checkpoints are written with
    (``checkpoints/config.json``: its hash and the whole configuration), atomically. Written by
    the trainer when a run starts (and when a run directory older than the record resumes)."""
    return write_json_atomic(Path(run_dir) / CONFIG_RECORD,
                             {"sha256": config_sha256(config), "config": config_dict(config)},
                             indent=1)


def read_config_record(run_dir: str | Path) -> RunConfig | None:
    """The configuration recorded when the run started, or None if the run has no record
    (older run directories).

    Raises:
      ValueError: the record is unreadable or does not match its own hash (named).
    """
    path = Path(run_dir) / CONFIG_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: the run's configuration record is unreadable ({e})") from None
    try:
        config = merge(RunConfig(), record["config"])
        ok = config_sha256(config) == record["sha256"]
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: the run's configuration record is damaged (its contents do "
                         "not match its hash)")
    return config


def check_resume(run_dir: str | Path, config: RunConfig | None) -> RunConfig:
    """The config to resume (or evaluate) ``run_dir`` with (its ``config.json``).

    ``config.json`` is compared as a whole with the record the trainer wrote when the run
    started (:func:`write_config_record`): a file edited since (by hand, or by anything else)
    is refused, naming each field that differs, before any data or checkpoint is read.

    Raises:
      ValueError: ``run_dir`` has no ``config.json``, its ``config.json`` differs from the
        run's record, or ``config`` is given and differs from the saved one (the message lists
        each difference as ``saved != requested``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"cannot resume {str(run_dir)!r}: no config.json (not a run directory)")
    saved = load_config(run_dir / "config.json")
    recorded = read_config_record(run_dir)
    if recorded is not None and recorded != saved:
        changes = diff(recorded, saved)
        raise ValueError(
            f"{str(run_dir / 'config.json')!r} was changed after the run started (recorded at "
            f"start != config.json now): {'; '.join(changes)}; the checkpoints belong to the "
            f"recorded configuration: restore config.json (the record is in {CONFIG_RECORD}), "
            "or start a new run with the new configuration")
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
