"""Checkpoints with orbax: the last ``k`` interval checkpoints and the best-validation one.

Layout of ``RUN_DIR/checkpoints/``::

    interval/<epoch>/   state (the whole stacked TrainState) + meta (JSON: epoch, wall time)
    best/<epoch>/       best (per-seed best params and batch_stats) + meta (best epochs/values)

Parameters are stored as the state holds them: one flat float32 vector per seed,
``[seeds, P]``; ``Setup.flat.to_tree(params)`` gives the Flax ``"params"`` tree.

Both are ``orbax.checkpoint.CheckpointManager`` s, saving synchronously. Orbax writes each step
to a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact (incomplete temporaries are cleaned up on the next open).

Verification: after each save the SHA-256 of every file of the step directory is written to
``checksums/<interval|best>-<epoch>.json`` (atomically; entries of steps orbax has removed are
pruned). :meth:`RunCheckpoints.restore` and :meth:`RunCheckpoints.restore_best` recompute them
before restoring: a missing, truncated or changed file (one flipped byte included) makes the
checkpoint *damaged*. Restoring walks the checkpoints newest first, skips damaged ones and
those orbax cannot read, and records each skip in :attr:`RunCheckpoints.skipped` as
``(kind, epoch, reason)``; only when none is intact does it raise :class:`CheckpointError`
(one line naming each checkpoint and why). A checkpoint without a checksum file (written before
checksums existed) is restored unverified and noted in :attr:`RunCheckpoints.unverified`.

Readers and the writer: ``RunCheckpoints(run_dir)`` opens the checkpoints *read-only*: it
creates no directory, never cleans up orbax's temporary directories (which may be the step a
running trainer is writing at that moment) and refuses :meth:`~RunCheckpoints.save`,
:meth:`~RunCheckpoints.save_best` and :meth:`~RunCheckpoints.quarantine`. Only the trainer
opens them with ``writable=True``. Every reader (``geonorm-jax eval``, ``load_potential``,
notebooks) therefore runs beside a training run without changing it. A reader racing the
trainer's retention (a step removed while it is being read) re-lists the steps and tries
again instead of reporting the checkpoint damaged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from geonorm_jax._io import write_json_atomic
from geonorm_jax.train.state import TrainState

__all__ = ["RunCheckpoints", "CheckpointError", "ReadOnlyCheckpointsError", "digest_directory"]

CHECKSUMS = "checksums"


class CheckpointError(ValueError):
    """No intact checkpoint to restore (the message names each one tried and why)."""


class ReadOnlyCheckpointsError(ValueError):
    """A write (save, quarantine) on checkpoints opened read-only."""

#: how often a reader re-lists the steps when the ones it listed vanished while reading
READ_RETRIES = 5


def digest_directory(directory: str | Path) -> dict[str, str]:
    """``{relative path: SHA-256 hex}`` of every regular file under ``directory``, sorted."""
    directory = Path(directory)
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[path.relative_to(directory).as_posix()] = h.hexdigest()
    return out


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _abstract(tree):
    """Shape/dtype/sharding structs of ``tree`` (already-abstract leaves pass through)."""
    return jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else ocp.utils.to_shape_dtype_struct(x),
        tree,
    )


class RunCheckpoints:
    """The checkpoints of one run directory.

    Args:
      run_dir: the run directory (checkpoints go to ``run_dir/checkpoints``).
      keep: how many interval checkpoints to keep.
      writable: open for writing (the trainer only): creates the directories and cleans up
        the temporaries of an interrupted save. The default, read-only, writes and removes
        nothing (module docstring).
    """

    def __init__(self, run_dir: str | Path, keep: int = 3, *, writable: bool = False):
        root = Path(run_dir).resolve() / "checkpoints"
        self.root = root
        self.writable = bool(writable)
        #: ``(kind, epoch, reason)`` of each checkpoint the last restore skipped
        self.skipped: list[tuple[str, int, str]] = []
        #: ``(kind, epoch)`` restored without a checksum file (older run directories)
        self.unverified: list[tuple[str, int]] = []
        if self.writable:
            opts = dict(enable_async_checkpointing=False, cleanup_tmp_directories=True)
        else:
            opts = dict(enable_async_checkpointing=False, cleanup_tmp_directories=False,
                        read_only=True, create=False)
        self.interval = self._open_manager(root / "interval", keep, opts)
        self.best = self._open_manager(root / "best", 1, opts)

    def _open_manager(self, path: Path, keep: int, opts: dict, attempts: int = 5):
        """An orbax manager of ``path``. A reader lists the steps while the trainer may remove
        one (retention of interval checkpoints, a replaced best): orbax then fails to stat a
        step it has just listed; the listing is taken again (a writer never retries)."""
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        for attempt in range(attempts):
            try:
                return ocp.CheckpointManager(path, options=options)
            except FileNotFoundError:
                if self.writable or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _need_writable(self, what: str) -> None:
        if not self.writable:
            raise ReadOnlyCheckpointsError(
                f"{what}: the checkpoints of {str(self.root.parent)!r} are open read-only "
                "(a reader never writes); open them with RunCheckpoints(..., writable=True)")

    def save(self, epoch: int, state: TrainState, meta: dict) -> None:
        """Save the full state after ``epoch`` (overwrites nothing; ``epoch`` is the step)."""
        self._need_writable("save")
        if epoch in self.interval.all_steps():
            return
        self.interval.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._write_checksums("interval", epoch)

    def save_best(self, epoch: int, state: TrainState, meta: dict) -> None:
        """Save the per-seed best parameters (called when a seed improved at ``epoch``)."""
        self._need_writable("save_best")
        if epoch in self.best.all_steps():
            return
        best = {"params": state.best_params, "batch_stats": state.best_batch_stats}
        self.best.save(
            epoch,
            args=ocp.args.Composite(best=ocp.args.StandardSave(best), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._write_checksums("best", epoch)

    # -- verification ------------------------------------------------------------------------

    def _manager(self, kind: str) -> ocp.CheckpointManager:
        return self.interval if kind == "interval" else self.best

    def _step_dir(self, kind: str, epoch: int) -> Path:
        return self.root / kind / str(epoch)

    def _sums_path(self, kind: str, epoch: int) -> Path:
        return self.root / CHECKSUMS / f"{kind}-{epoch}.json"

    def _write_checksums(self, kind: str, epoch: int) -> None:
        step_dir = self._step_dir(kind, epoch)
        if not step_dir.is_dir():
            return
        write_json_atomic(self._sums_path(kind, epoch), {
            "algorithm": "sha256", "kind": kind, "epoch": epoch,
            "files": digest_directory(step_dir)}, indent=1)
        keep = {f"{kind}-{e}.json" for e in self._manager(kind).all_steps()}
        for path in (self.root / CHECKSUMS).glob(f"{kind}-*.json"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def verify(self, kind: str, epoch: int) -> str | None:
        """Why checkpoint ``kind/epoch`` is damaged (one line), ``None`` if its files match
        their checksums, ``"unverified"`` if it has no checksum file."""
        step_dir = self._step_dir(kind, epoch)
        if not step_dir.is_dir():
            return f"{step_dir.name}: directory missing"
        try:
            saved = json.loads(self._sums_path(kind, epoch).read_text())["files"]
        except FileNotFoundError:
            return "unverified"
        except (ValueError, KeyError, TypeError) as e:
            return f"checksum file unreadable ({_first_line(e)})"
        try:
            found = digest_directory(step_dir)
        except FileNotFoundError:  # removed while being read (the trainer's retention)
            return f"{step_dir.name}: directory missing"
        missing = sorted(set(saved) - set(found))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            return f"file {missing[0]}{more} missing"
        changed = sorted(k for k in saved if saved[k] != found[k])
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            return f"file {changed[0]}{more} does not match its checksum (changed or truncated)"
        return None

    def _restore_verified(self, kind: str, epochs, restore_one, *, listed: bool = True):
        """Restore the newest intact of ``epochs`` with ``restore_one(epoch)``; record skips.

        Read-only, with ``listed`` (the epochs are the manager's listing, not one requested
        epoch): when every candidate failed and the listing has changed meanwhile (a trainer
        beside this reader saved and removed steps), list again and retry."""
        for _ in range(READ_RETRIES if (listed and not self.writable) else 1):
            found, out = self._restore_once(kind, epochs, restore_one)
            if found is not None:
                return found, out
            manager = self._manager(kind)
            manager.reload()
            now = list(manager.all_steps())
            if sorted(now) == sorted(epochs):
                break
            epochs = now
        return None, None

    def _restore_once(self, kind: str, epochs, restore_one):
        self.skipped, self.unverified = [], []
        for epoch in sorted(epochs, reverse=True):
            problem = self.verify(kind, epoch)
            if problem not in (None, "unverified"):
                self.skipped.append((kind, epoch, problem))
                continue
            try:
                out = restore_one(epoch)
            except Exception as e:  # noqa: BLE001 - any failure to read means damaged
                self.skipped.append((kind, epoch, f"unreadable ({_first_line(e)})"))
                continue
            if problem == "unverified":
                self.unverified.append((kind, epoch))
            return epoch, out
        return None, None

    def describe_skipped(self) -> list[str]:
        """One line per checkpoint the last restore skipped (for warnings)."""
        return [f"checkpoint {kind}/{epoch} skipped: {reason}"
                for kind, epoch, reason in self.skipped]

    def quarantine(self, kind: str, epoch: int) -> Path:
        """Move the damaged checkpoint ``kind/epoch`` to ``checkpoints/damaged/`` (kept for
        inspection, out of orbax's way so the epoch can be saved again)."""
        self._need_writable("quarantine")
        dest = self.root / "damaged" / f"{kind}-{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self._step_dir(kind, epoch)
        if src.exists():
            shutil.move(str(src), str(dest))
        self._sums_path(kind, epoch).unlink(missing_ok=True)
        self._manager(kind).reload()
        return dest

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete interval checkpoint, or None."""
        if not self.writable:
            self.interval.reload()
        return self.interval.latest_step()

    def restore(self, like: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """``(state, meta)`` of the newest intact interval checkpoint (or of ``epoch``), in the
        structure of ``like`` (a state or its ``jax.ShapeDtypeStruct`` s, e.g.
        ``Setup.abstract_state()``). Damaged newer ones are skipped (:attr:`skipped`).

        Raises:
          FileNotFoundError: no interval checkpoint at all.
          CheckpointError: none intact (one line naming each and why).
        """
        if not self.writable:
            self.interval.reload()
        epochs = list(self.interval.all_steps()) if epoch is None else [epoch]
        if not epochs:
            raise FileNotFoundError("no checkpoint found to resume from")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)),
                                  meta=ocp.args.JsonRestore())
        found, out = self._restore_verified(
            "interval", epochs, lambda e: self.interval.restore(e, args=args),
            listed=epoch is None)
        if found is None:
            raise CheckpointError(
                f"no intact checkpoint in {str(self.root / 'interval')!r}: "
                + "; ".join(f"epoch {e}: {r}" for _, e, r in self.skipped))
        return out.state, out.meta

    def restore_best(self, like: dict) -> tuple[Any, dict] | None:
        """``({"params", "batch_stats"}, meta)`` of the best checkpoint, or None if there is
        none or it is damaged (then :attr:`skipped` says why)."""
        if not self.writable:
            self.best.reload()
        epochs = list(self.best.all_steps())
        if not epochs:
            self.skipped = []
            return None
        args = ocp.args.Composite(best=ocp.args.StandardRestore(_abstract(like)),
                                  meta=ocp.args.JsonRestore())
        found, out = self._restore_verified(
            "best", epochs, lambda e: self.best.restore(e, args=args))
        return None if found is None else (out.best, out.meta)

    def close(self) -> None:
        self.interval.close()
        self.best.close()
