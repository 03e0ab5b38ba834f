"""The training loop: epochs, evaluation, checkpoints, resume and the run directory.

The run directory's files (``config.json``, ``metrics.jsonl``, ``checkpoints/``,
``curves.png``, ``summary.json``) are described, read and summarised in
:mod:`geonorm_jax.train.rundir`.

Resume (``train(..., resume=True)``) restores the newest interval checkpoint (state, which holds
the data-order key, and the epoch), drops later lines of ``metrics.jsonl`` and continues; the
following epochs are then identical to an uninterrupted run.

Progress: a ``tqdm`` bar (``tqdm.auto``: a widget in Jupyter and Colab, text on a terminal)
with the epoch, the mean train loss over live seeds, the last mean validation MSE, the best
validation MSE so far, the rate and the elapsed time and ETA.

Ctrl-C: the first SIGINT lets the running epoch finish, saves a checkpoint and returns with
``summary["interrupted"] = True``; a second SIGINT aborts at once (after saving the last
complete state if its buffers are still alive).

Wall-clock stop: ``train(..., deadline=t)`` (``t`` in ``time.time()`` seconds) ends the run at
the first epoch end at or past ``t``: it saves an interval checkpoint of that epoch whatever
``checkpoint_every`` is, writes the metrics and ``summary.json``, and returns with
``summary["stopped"] = "deadline"`` and ``summary["epochs_completed"] < summary["epochs"]``.
``train(..., resume=True)`` then continues from that epoch exactly. A run that finishes has
``summary["stopped"] = None`` (``"interrupt"`` after Ctrl-C). A process killed between
checkpoints loses the epochs since the last interval checkpoint (``checkpoint_every``).

All seeds exploded: the run stops after that epoch with a checkpoint and
``summary["stopped"] = "all_exploded"`` (frozen seeds would only repeat themselves). The epoch
record in which a seed explodes carries ``exploded_cause`` (per seed ``None`` or ``{"cause":
"data" | "model", "reason", "loss"}``); the summary copies it per seed.

Safety (see also :mod:`geonorm_jax.train.lock`, :mod:`geonorm_jax.train.checkpoint`,
:mod:`geonorm_jax.train.provenance`): the run directory is locked for the whole call (a second
process is refused at once, naming the holder); the data is checked for non-finite values
before training; ``data.json`` records the data's content hash and source, and a resume with
different data is refused; resume restores the newest *intact* interval checkpoint (damaged
newer ones are skipped with a warning and moved to ``checkpoints/damaged/``).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.train.checkpoint import RunCheckpoints
from geonorm_jax.train.config import RunConfig, diff, save_config
from geonorm_jax.train.lock import LOCK_NAME, RunLock, RunLockedError, check_unlocked
from geonorm_jax.train.progress import EpochBar
from geonorm_jax.train.provenance import (
    check_finite,
    check_provenance,
    describe,
    write_provenance,
)
from geonorm_jax.train.rundir import (
    check_resume,
    format_table,
    read_config_record,
    read_metrics,
    resume_records,
    summarize,
    write_config_record,
    write_metrics,
    write_summary,
)
from geonorm_jax.train.setup import Setup, build
from geonorm_jax.train.state import TrainState

# read_metrics, summarize, format_table and check_resume live in rundir.py and are re-exported
# here, where they were first defined.
__all__ = ["train", "EpochContext", "read_metrics", "summarize", "format_table", "check_resume"]


def _floats(a) -> list:
    """``a`` (any shape, e.g. ``[seeds]``) as a flat list of floats, non-finite values as None
    (JSON has no NaN)."""
    return [float(x) if math.isfinite(float(x)) else None for x in np.asarray(a).reshape(-1)]


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
    """False if any buffer of ``state`` was deleted (donated to a call that did not return)."""
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
    deadline: float | None = None,
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
      deadline: wall-clock stop in ``time.time()`` seconds, or None: at the first epoch end at
        or past it, save a checkpoint and return (``summary["stopped"] == "deadline"``); at
        least one epoch runs per call.

    Raises:
      ValueError: bad configuration or data (non-finite values are named by split, field and
        sample), existing run directory, resume mismatch. Nothing is written in these cases.
        Subclasses: :class:`~geonorm_jax.train.lock.RunLockedError` (another process trains
        in ``run_dir``; raised before anything is loaded),
        :class:`~geonorm_jax.train.provenance.DataMismatchError` (resume on data whose hash
        differs from the run's ``data.json``),
        :class:`~geonorm_jax.train.checkpoint.CheckpointError` (resume: no intact checkpoint).
    """
    stream = stream if stream is not None else sys.stderr
    run_dir = Path(run_dir)
    if setup is not None and setup.config != config:
        raise ValueError("train: setup.config differs from config: " + "; ".join(
            diff(setup.config, config)))
    check_unlocked(run_dir)  # another process trains here: refused at once, naming it
    if resume:
        check_resume(run_dir, config)
    if not resume and not _empty(run_dir):
        raise ValueError(
            f"run directory {str(run_dir)!r} already exists; use --resume {run_dir} to continue "
            "it, or choose another --out"
        )
    s = setup if setup is not None else build(
        config, data_dir=data_dir, cache_dir=cache_dir, progress=progress
    )
    check_finite(s.data, where="train")  # also for a prebuilt setup whose data was replaced
    provenance = describe(s.data, config.task, s.provenance.get("source"))
    has_provenance = resume and check_provenance(
        run_dir, provenance, "resume", stream, getattr(s.task, "legacy_sha256", None))
    state = None if resume else s.init_state()

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, stream)
    try:
        lock.acquire()
    except RunLockedError:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if still empty (the other process may own it now)
        raise
    ckpt = None
    try:
        if not resume and not _empty(run_dir):  # created meanwhile by a process now gone
            raise ValueError(f"run directory {str(run_dir)!r} already exists; use --resume "
                             f"{run_dir} to continue it, or choose another --out")
        ckpt = RunCheckpoints(run_dir, keep=config.train.keep_checkpoints, writable=True)
        start_epoch, wall0, records = 0, 0.0, []
        if resume and ckpt.latest_epoch() is not None:
            state, meta = ckpt.restore(s.abstract_state())  # CheckpointError if none intact
            start_epoch, wall0 = int(meta["epoch"]), float(meta.get("wall_time", 0.0))
            records = resume_records(run_dir, start_epoch)  # refuses lost history
            _report_restore(ckpt, meta, stream)  # moves damaged checkpoints aside
            if read_config_record(run_dir) is None:  # a run directory older than the record
                write_config_record(run_dir, config)
        else:
            if state is None:  # resuming a run that died before its first checkpoint
                state = s.init_state()
            save_config(config, run_dir / "config.json")
            write_config_record(run_dir, config)
            records = []
        if not has_provenance:
            write_provenance(run_dir, provenance)
        write_metrics(run_dir, records)
        ctx = EpochContext(
            setup=s, checkpoints=ckpt, run_dir=run_dir, start_epoch=start_epoch,
            records=records, t0=time.perf_counter() - wall0, progress=progress, stream=stream,
            on_epoch_end=on_epoch_end, deadline=deadline,
        )
        return _loop(ctx, state)
    except BaseException:
        # A run directory this call created is removed if it holds no checkpoint yet.
        has_checkpoint = ckpt is not None and ckpt.latest_epoch() is not None
        if ckpt is not None:
            ckpt.close()
            ckpt = None
        lock.release()
        if created and not has_checkpoint:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if ckpt is not None:
            ckpt.close()
        lock.release()


def _empty(run_dir: Path) -> bool:
    """True if ``run_dir`` does not exist or is an empty directory (a lock file aside)."""
    if not run_dir.exists():
        return True
    return run_dir.is_dir() and all(p.name == LOCK_NAME for p in run_dir.iterdir())


def _report_restore(ckpt: RunCheckpoints, meta: dict, stream) -> None:
    """After :meth:`RunCheckpoints.restore`: damaged newer checkpoints (and a damaged best one)
    are moved to ``checkpoints/damaged/`` with a one-line warning each."""
    skipped = list(ckpt.skipped)
    for line in ckpt.describe_skipped():
        stream.write(f"warning: {line}; resuming from epoch {int(meta['epoch'])}\n")
    for kind, epoch in ckpt.unverified:
        stream.write(f"note: checkpoint {kind}/{epoch} has no checksum file (written before "
                     "checkpoints were verified); restored unverified\n")
    for kind, epoch, _ in skipped:
        ckpt.quarantine(kind, epoch)
    for epoch in ckpt.best.all_steps():
        problem = ckpt.verify("best", epoch)
        if problem not in (None, "unverified"):
            dest = ckpt.quarantine("best", epoch)
            stream.write(f"warning: checkpoint best/{epoch} is damaged ({problem}); moved to "
                         f"{dest.name}, the next improvement saves a new one\n")


@dataclass(frozen=True, kw_only=True)
class EpochContext:
    """What the epoch loop of one :func:`train` call works with, built once per call.

    The frozen fields never change during the loop; ``records`` is the one mutable member
    (the loop appends one record per epoch). The train state is not part of it: it changes
    every epoch (and its buffers are donated), so it is passed beside the context.

    Attributes:
      setup: the built run: config, task, data (``{"train" | "valid" | "test": {name: [S,
        ...]}}``), and the jitted ``epoch_fn``, ``metrics_fn`` and ``update_best_fn`` over
        the seed axis.
      checkpoints: the run's interval and best checkpoints.
      run_dir: the run directory (``metrics.jsonl``, ``summary.json``, ``curves.png``).
      start_epoch: the last epoch already done (0 for a new run, the restored epoch on resume).
      records: the ``metrics.jsonl`` records of epochs ``1..start_epoch``, then those of this
        call, one per epoch as it completes.
      t0: the ``time.perf_counter()`` reading at which the run's wall time would be 0 (the
        wall time of earlier calls is subtracted on resume).
      progress: show the epoch bar.
      stream: where the bar and messages go.
      on_epoch_end: optional ``callback(epoch, record)``.
      deadline: wall-clock stop in ``time.time()`` seconds, or None.
    """

    setup: Setup
    checkpoints: RunCheckpoints
    run_dir: Path
    start_epoch: int
    records: list[dict]
    t0: float
    progress: bool
    stream: TextIO
    on_epoch_end: Callable[[int, dict], None] | None = None
    deadline: float | None = None

    @property
    def config(self) -> RunConfig:
        """The run's configuration (``setup.config``)."""
        return self.setup.config

    def meta(self, epoch: int) -> dict:
        """A checkpoint's metadata: ``{"epoch": epoch, "wall_time": seconds so far}``."""
        return {"epoch": epoch, "wall_time": time.perf_counter() - self.t0}


def _loop(ctx: EpochContext, state: TrainState) -> dict:
    """Epochs ``ctx.start_epoch + 1 ..`` until the last one or a stop; returns the summary."""
    t = ctx.config.train
    bar = EpochBar(t.epochs, ctx.start_epoch, ctx.stream, ctx.progress)
    stopped = None
    epoch = ctx.start_epoch
    metrics_file = open(ctx.run_dir / "metrics.jsonl", "a")  # noqa: SIM115
    try:
        with _StopRequest(ctx.stream) as stop:
            try:
                for epoch in range(ctx.start_epoch + 1, t.epochs + 1):
                    state, record = _run_epoch(ctx, state, epoch)
                    ctx.records.append(record)
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                        ctx.checkpoints.save(epoch, state, ctx.meta(epoch))
                    bar.update(record)
                    if ctx.on_epoch_end is not None:
                        ctx.on_epoch_end(epoch, record)
                    stopped = _stop_reason(ctx, epoch, record, stop.requested)
                    if stopped is not None:
                        ctx.checkpoints.save(epoch, state, ctx.meta(epoch))  # no-op if saved
                        break
            except KeyboardInterrupt:
                bar.close()
                _save_on_abort(ctx, state)
                raise
    finally:
        metrics_file.close()
    bar.close()
    return _finish(ctx, epoch, stopped)


def _run_epoch(ctx: EpochContext, state: TrainState, epoch: int) -> tuple[TrainState, dict]:
    """Train one epoch (all seeds), evaluate when due; returns the new state and the epoch's
    ``metrics.jsonl`` record (per-seed lists: ``train_loss``, ``exploded``, ...)."""
    s = ctx.setup
    was_exploded = np.asarray(state.exploded).copy()
    step_before = int(np.asarray(state.step)[0])
    state, losses, applied = s.epoch_fn(state, s.data["train"])
    losses, applied = np.asarray(losses), np.asarray(applied)  # [seeds, steps_per_epoch]
    train_loss = [
        float(np.mean(lo[ap])) if ap.any() else None
        for lo, ap in zip(losses, applied, strict=True)
    ]
    record = {
        "epoch": epoch,
        "step": int(np.asarray(state.step)[0]),
        "time": round(time.perf_counter() - ctx.t0, 3),
        "train_loss": train_loss,
        "exploded": [bool(x) for x in np.asarray(state.exploded)],
        "exploded_at": [int(x) for x in np.asarray(state.exploded_at)],
    }
    newly = np.asarray(state.exploded) & ~was_exploded
    if newly.any():
        record["exploded_cause"] = _explosion_causes(
            s, newly, record["exploded_at"], step_before, losses)
    t = ctx.config.train
    if epoch % t.eval_every == 0 or epoch == t.epochs:
        state = _evaluate(ctx, state, epoch, record)
    return state, record


def _evaluate(ctx: EpochContext, state: TrainState, epoch: int, record: dict) -> TrainState:
    """Validation and test metrics into ``record`` (per seed: ``val_mse``, ``test_mse``,
    ``best_val``, ``best_epoch``, ``val_<name>``, ``test_<name>``); updates the best state and
    saves a best checkpoint when a seed improved. Returns the updated state."""
    s = ctx.setup
    val, _ = s.metrics_fn(state.params, state.batch_stats, s.data["valid"])
    test, _ = s.metrics_fn(state.params, state.batch_stats, s.data["test"])
    val_mse = jnp.mean(val["mse"], axis=1)  # [seeds]
    state, improved = s.update_best_fn(state, val_mse, jnp.asarray(epoch, jnp.int32))
    record.update(
        val_mse=_floats(val_mse),
        test_mse=_floats(jnp.mean(test["mse"], axis=1)),
        best_val=_floats(state.best_val),
        best_epoch=[int(x) for x in np.asarray(state.best_epoch)],
    )
    for name in s.task.metrics:  # the task's further metrics
        record[f"val_{name}"] = _floats(jnp.mean(val[name], axis=1))
        record[f"test_{name}"] = _floats(jnp.mean(test[name], axis=1))
    if np.asarray(improved).any():
        ctx.checkpoints.save_best(epoch, state, ctx.meta(epoch) | {
            "best_epoch": record["best_epoch"],
            "best_val": record["best_val"],
        })
    return state


def _stop_reason(ctx: EpochContext, epoch: int, record: dict, requested: bool) -> str | None:
    """Why the run stops after ``epoch`` before its last one: ``"interrupt"`` (Ctrl-C was
    ``requested``), ``"deadline"``, ``"all_exploded"``; None to go on."""
    last = ctx.config.train.epochs
    if requested:
        return "interrupt"
    if ctx.deadline is not None and epoch < last and time.time() >= ctx.deadline:
        return "deadline"
    if all(record["exploded"]) and epoch < last:
        return "all_exploded"
    return None


def _save_on_abort(ctx: EpochContext, state: TrainState) -> None:
    """After a second Ctrl-C: checkpoint the last complete epoch if ``state`` is still that
    epoch's state (its buffers alive and its step count matching)."""
    done = ctx.records[-1]["epoch"] if ctx.records else ctx.start_epoch
    consistent = _alive(state) and int(
        np.asarray(state.step)[0]) == done * ctx.setup.steps_per_epoch
    if consistent and done > ctx.start_epoch:
        ctx.checkpoints.save(done, state, ctx.meta(done))
        ctx.stream.write(f"interrupted: checkpoint saved at epoch {done}; resume with "
                         f"--resume {ctx.run_dir}\n")


def _finish(ctx: EpochContext, epoch: int, stopped: str | None) -> dict:
    """Write ``summary.json`` and ``curves.png`` of the run that ended after ``epoch``
    (``stopped``: see :func:`_stop_reason`); returns the summary."""
    s, run_dir, stream = ctx.setup, ctx.run_dir, ctx.stream
    interrupted = stopped == "interrupt"
    wall = time.perf_counter() - ctx.t0
    summary = summarize(s.config, ctx.records, wall_time=wall, devices=s.devices,
                        num_params=s.num_params, steps_per_epoch=s.steps_per_epoch,
                        **({"task_info": s.info} if s.config.task != "nbody" else {}))
    summary["interrupted"] = interrupted
    summary["stopped"] = stopped
    write_summary(run_dir, summary)
    try:
        from geonorm_jax.train.plot import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    except ImportError as e:  # matplotlib missing: the run itself is fine
        stream.write(f"curves.png skipped: {e}\n")
    if interrupted:
        stream.write(f"interrupted: checkpoint saved at epoch {epoch}; resume with "
                     f"geonorm-jax train --resume {run_dir}\n")
    elif stopped == "all_exploded":
        stream.write(f"stopped after epoch {epoch}: every seed exploded and is frozen (see "
                     "exploded_cause in summary.json)\n")
    elif stopped == "deadline":
        stream.write(f"deadline reached: checkpoint saved at epoch {epoch}; resume with "
                     f"geonorm-jax train --resume {run_dir}\n")
    return summary


def _explosion_causes(s: Setup, newly, exploded_at, step_before, losses) -> list:
    """Per seed, ``None`` or why it exploded this epoch: ``{"cause": "data" | "model",
    "reason": ..., "loss": ...}``. The cause is ``"data"`` when the training split holds
    non-finite values (only possible for data changed after the check before training),
    else ``"model"``; the reason is the batch loss at the explosion step."""
    try:
        check_finite({"train": s.data["train"]}, where="training data")
        data_problem = None
    except ValueError as e:
        data_problem = str(e)
    threshold = s.config.train.explosion_threshold
    out = []
    for i, new in enumerate(newly):
        if not new:
            out.append(None)
            continue
        k = int(exploded_at[i]) - step_before
        loss = float(losses[i][k]) if 0 <= k < losses.shape[1] else float("nan")
        if not math.isfinite(loss):
            reason = f"non-finite loss ({loss}) at step {exploded_at[i]}"
        elif loss > threshold:
            reason = (f"loss {loss:.3e} above train.explosion_threshold {threshold:g} at step "
                      f"{exploded_at[i]}")
        else:
            reason = f"non-finite gradient at step {exploded_at[i]} (loss {loss:.3e})"
        if data_problem is not None:
            out.append({"cause": "data", "reason": f"{reason}; {data_problem}",
                        "loss": loss if math.isfinite(loss) else None})
        else:
            out.append({"cause": "model", "reason": f"{reason}; the data is finite (checked "
                        "before training), so the model diverged",
                        "loss": loss if math.isfinite(loss) else None})
    return out
