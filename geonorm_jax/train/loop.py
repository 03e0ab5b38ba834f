"""The training loop: epochs, evaluation, checkpoints, resume, metrics and the run directory.

Run directory::

    config.json      the RunConfig (``geonorm_jax.train.config``)
    metrics.jsonl    one JSON line per epoch: epoch, step, time, per-seed train_loss and
                     exploded; on evaluation epochs also per-seed val_mse, test_mse, best_val,
                     best_epoch
    checkpoints/     orbax: interval/<epoch> (last k) and best/<epoch> (see checkpoint.py)
    curves.png       log-scale train and validation loss, one line per seed, explosions marked
    summary.json     per seed: best epoch, best val MSE, test MSE at the best val epoch,
                     explosion; mean/std over seeds; wall time

Resume (``train(..., resume=True)``) restores the newest interval checkpoint (state, which holds
the data-order key, and the epoch), drops later lines of ``metrics.jsonl`` and continues; the
following epochs are then identical to an uninterrupted run.

Ctrl-C: the first SIGINT lets the running epoch finish, saves a checkpoint and returns with
``summary["interrupted"] = True``; a second SIGINT aborts at once (after saving the last
complete state if its buffers are still alive).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.train.checkpoint import RunCheckpoints
from geonorm_jax.train.config import RunConfig, diff, load_config, save_config
from geonorm_jax.train.progress import Progress
from geonorm_jax.train.setup import Setup, build
from geonorm_jax.train.state import TrainState

__all__ = ["train", "read_metrics", "summarize", "format_table", "check_resume", "SLEEP_ENV"]

# Test hook: seconds to sleep after each epoch (lets a test kill a run mid-training).
SLEEP_ENV = "GEONORM_JAX_TEST_EPOCH_SLEEP"


def _floats(a) -> list:
    return [float(x) if math.isfinite(float(x)) else None for x in np.asarray(a).reshape(-1)]


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def check_resume(run_dir: str | Path, config: RunConfig | None) -> RunConfig:
    """The config to resume ``run_dir`` with; ``ValueError`` if ``config`` differs from it."""
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


class _StopRequest:
    """SIGINT handler: the first Ctrl-C requests a stop after the epoch, the second aborts."""

    def __init__(self, stream):
        self.requested = False
        self.stream = stream
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.stream.write("\nCtrl-C: saving a checkpoint after this epoch (again to abort)\n")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _alive(state: TrainState) -> bool:
    return not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_dir=None,
    cache_dir=None,
    progress: bool = True,
    stream=None,
    on_epoch_end=None,
    setup: Setup | None = None,
) -> dict:
    """Train ``config`` into ``run_dir``; returns the summary (also written to summary.json).

    Args:
      config: the run configuration (validated here).
      run_dir: the run directory; must not exist (or be empty) unless ``resume``.
      resume: continue the run in ``run_dir`` (its config.json must equal ``config``).
      data_dir: use this dataset directory instead of the cache.
      cache_dir: dataset cache (default: ``$GEONORM_JAX_CACHE`` or the data package's default).
      progress: show the progress bar on ``stream`` (default stderr).
      on_epoch_end: optional ``callback(epoch, record)`` (tests, notebooks).
      setup: a prebuilt :class:`Setup` (reuses compiled functions across calls).

    Raises:
      ValueError: bad configuration or data, existing run directory, resume mismatch. Nothing
        is written in these cases.
    """
    stream = stream if stream is not None else sys.stderr
    run_dir = Path(run_dir)
    if setup is not None and setup.config != config:
        raise ValueError("train: setup.config differs from config: " + "; ".join(
            diff(setup.config, config)))
    if resume:
        check_resume(run_dir, config)
    elif run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(
            f"run directory {str(run_dir)!r} already exists; use --resume {run_dir} to continue "
            "it, or choose another --out"
        )
    s = setup if setup is not None else build(
        config, data_dir=data_dir, cache_dir=cache_dir, progress=progress
    )
    state = None if resume else s.init_state()

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = None
    try:
        ckpt = RunCheckpoints(run_dir, keep=config.train.keep_checkpoints)
        start_epoch, wall0, records = 0, 0.0, []
        if resume and ckpt.latest_epoch() is not None:
            state, meta = ckpt.restore(s.abstract_state())
            start_epoch, wall0 = int(meta["epoch"]), float(meta.get("wall_time", 0.0))
            records = [r for r in read_metrics(run_dir) if r["epoch"] <= start_epoch]
        else:
            if state is None:  # resuming a run that died before its first checkpoint
                state = s.init_state()
            save_config(config, run_dir / "config.json")
            records = []
        _write_metrics(run_dir, records)
        return _loop(s, state, ckpt, run_dir, start_epoch, wall0, records, progress,
                     stream, on_epoch_end)
    except BaseException:
        # A run directory this call created is removed if it holds no checkpoint yet.
        has_checkpoint = ckpt is not None and ckpt.latest_epoch() is not None
        if ckpt is not None:
            ckpt.close()
            ckpt = None
        if created and not has_checkpoint:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if ckpt is not None:
            ckpt.close()


def _write_metrics(run_dir: Path, records: list[dict]) -> None:
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, run_dir / "metrics.jsonl")


def _loop(s: Setup, state, ckpt, run_dir, start_epoch, wall0, records, progress, stream,
          on_epoch_end) -> dict:
    t = s.config.train
    data = s.data
    sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    bar = Progress(t.epochs, start_epoch, stream=stream, enabled=progress)
    t0 = time.perf_counter() - wall0
    interrupted = False
    epoch = start_epoch

    def meta(e):
        return {"epoch": e, "wall_time": time.perf_counter() - t0}

    metrics_file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115
    try:
        with _StopRequest(stream) as stop:
            try:
                for epoch in range(start_epoch + 1, t.epochs + 1):
                    state, losses, applied = s.epoch_fn(state, data["train"])
                    losses, applied = np.asarray(losses), np.asarray(applied)
                    train_loss = [
                        float(np.mean(lo[ap])) if ap.any() else None
                        for lo, ap in zip(losses, applied, strict=True)
                    ]
                    record = {
                        "epoch": epoch,
                        "step": int(np.asarray(state.step)[0]),
                        "time": round(time.perf_counter() - t0, 3),
                        "train_loss": train_loss,
                        "exploded": [bool(x) for x in np.asarray(state.exploded)],
                        "exploded_at": [int(x) for x in np.asarray(state.exploded_at)],
                    }
                    if epoch % t.eval_every == 0 or epoch == t.epochs:
                        val, _ = s.eval_fn(state.params, state.batch_stats, data["valid"])
                        test, _ = s.eval_fn(state.params, state.batch_stats, data["test"])
                        val_mse = jnp.mean(val, axis=1)
                        state, improved = s.update_best_fn(
                            state, val_mse, jnp.asarray(epoch, jnp.int32)
                        )
                        record.update(
                            val_mse=_floats(val_mse),
                            test_mse=_floats(jnp.mean(test, axis=1)),
                            best_val=_floats(state.best_val),
                            best_epoch=[int(x) for x in np.asarray(state.best_epoch)],
                        )
                        if np.asarray(improved).any():
                            ckpt.save_best(epoch, state, meta(epoch) | {
                                "best_epoch": record["best_epoch"],
                                "best_val": record["best_val"],
                            })
                    records.append(record)
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                        ckpt.save(epoch, state, meta(epoch))
                    live = [x for x in train_loss if x is not None]
                    vals = [x for x in record.get("val_mse", []) if x is not None]
                    bar.update(epoch, float(np.mean(live)) if live else None,
                               float(np.mean(vals)) if vals else None)
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, record)
                    if sleep:
                        time.sleep(sleep)
                    if stop.requested:
                        ckpt.save(epoch, state, meta(epoch))  # no-op if already saved
                        interrupted = True
                        break
            except KeyboardInterrupt:
                bar.close()
                done = records[-1]["epoch"] if records else start_epoch
                consistent = _alive(state) and int(
                    np.asarray(state.step)[0]) == done * s.steps_per_epoch
                if consistent and done > start_epoch:
                    ckpt.save(done, state, meta(done))
                    stream.write(f"interrupted: checkpoint saved at epoch {done}; resume with "
                                 f"--resume {run_dir}\n")
                raise
    finally:
        metrics_file.close()
    bar.close()
    wall = time.perf_counter() - t0
    summary = summarize(s.config, records, wall_time=wall, devices=s.devices,
                        num_params=s.num_params, steps_per_epoch=s.steps_per_epoch)
    summary["interrupted"] = interrupted
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        from geonorm_jax.train.plot import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    except ImportError as e:  # matplotlib missing: the run itself is fine
        stream.write(f"curves.png skipped: {e}\n")
    if interrupted:
        stream.write(f"interrupted: checkpoint saved at epoch {epoch}; resume with "
                     f"geonorm-jax train --resume {run_dir}\n")
    return summary


def summarize(config: RunConfig, records: list[dict], **extra) -> dict:
    """Per-seed results from the metrics records (test MSE at each seed's best val epoch)."""
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
        per_seed.append({
            "seed": seed,
            "best_epoch": best_epoch if best is not None else None,
            "best_val_mse": best["val_mse"][i] if best else None,
            "test_mse": best["test_mse"][i] if best else None,
            "final_train_loss": losses[-1] if losses else None,
            "exploded": exploded,
            "exploded_epoch": exploded_epoch,
            "exploded_step": exploded_step,
        })
    tests = [p["test_mse"] for p in per_seed if p["test_mse"] is not None]
    return {
        "epochs_completed": last.get("epoch", 0),
        "epochs": config.train.epochs,
        "seeds": per_seed,
        "test_mse_mean": float(np.mean(tests)) if tests else None,
        "test_mse_std": float(np.std(tests)) if tests else None,
        "num_exploded": sum(p["exploded"] for p in per_seed),
        **{k: v for k, v in extra.items() if k != "steps_per_epoch"},
        "steps_per_epoch": steps,
    }


def format_table(summary: dict) -> str:
    """The short table printed at the end of a run."""
    fmt = lambda x: f"{x:.4e}" if isinstance(x, float) else ("-" if x is None else str(x))
    rows = [("seed", "best epoch", "val MSE", "test MSE", "exploded")]
    for p in summary["seeds"]:
        boom = f"epoch {p['exploded_epoch']}" if p["exploded"] else "no"
        rows.append((str(p["seed"]), fmt(p["best_epoch"]), fmt(p["best_val_mse"]),
                     fmt(p["test_mse"]), boom))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary.get("test_mse_mean") is not None and len(summary["seeds"]) > 1:
        lines.append(f"test MSE over seeds: {summary['test_mse_mean']:.4e} "
                     f"+- {summary['test_mse_std']:.4e}")
    return "\n".join(lines)
