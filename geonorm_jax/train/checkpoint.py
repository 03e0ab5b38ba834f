"""Checkpoints with orbax: the last ``k`` interval checkpoints and the best-validation one.

Layout of ``RUN_DIR/checkpoints/``::

    interval/<epoch>/   state (the whole stacked TrainState) + meta (JSON: epoch, wall time)
    best/<epoch>/       best (per-seed best params and batch_stats) + meta (best epochs/values)

Parameters are stored as the state holds them: one flat float32 vector per seed,
``[seeds, P]``; ``Setup.flat.to_tree(params)`` gives the Flax ``"params"`` tree.

Both are ``orbax.checkpoint.CheckpointManager`` s, saving synchronously. Orbax writes each step
to a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact (incomplete temporaries are cleaned up on the next open).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from geonorm_jax.train.state import TrainState

__all__ = ["RunCheckpoints"]


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
    """

    def __init__(self, run_dir: str | Path, keep: int = 3):
        root = Path(run_dir).resolve() / "checkpoints"
        opts = dict(enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.interval = ocp.CheckpointManager(
            root / "interval", options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        )
        self.best = ocp.CheckpointManager(
            root / "best", options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts)
        )

    def save(self, epoch: int, state: TrainState, meta: dict) -> None:
        """Save the full state after ``epoch`` (overwrites nothing; ``epoch`` is the step)."""
        if epoch in self.interval.all_steps():
            return
        self.interval.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def save_best(self, epoch: int, state: TrainState, meta: dict) -> None:
        """Save the per-seed best parameters (called when a seed improved at ``epoch``)."""
        if epoch in self.best.all_steps():
            return
        best = {"params": state.best_params, "batch_stats": state.best_batch_stats}
        self.best.save(
            epoch,
            args=ocp.args.Composite(best=ocp.args.StandardSave(best), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete interval checkpoint, or None."""
        return self.interval.latest_step()

    def restore(self, like: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """``(state, meta)`` of ``epoch`` (default: latest), in the structure of ``like``
        (a state or its ``jax.ShapeDtypeStruct`` s, e.g. ``Setup.abstract_state()``)."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError("no checkpoint found to resume from")
        out = self.interval.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.meta

    def restore_best(self, like: dict) -> tuple[Any, dict] | None:
        """``({"params", "batch_stats"}, meta)`` of the best checkpoint, or None if none."""
        epoch = self.best.latest_step()
        if epoch is None:
            return None
        out = self.best.restore(
            epoch,
            args=ocp.args.Composite(
                best=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()
            ),
        )
        return out.best, out.meta

    def close(self) -> None:
        self.interval.close()
        self.best.close()
