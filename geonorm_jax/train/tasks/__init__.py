"""Tasks for the one training loop: charged N-body (``"nbody"``) and molecular energies and
forces (``"molecules"``). :func:`get_task` gives the task of a run configuration; the
interface is :class:`~geonorm_jax.train.tasks.base.Task`."""

from __future__ import annotations

from geonorm_jax.train.tasks.base import Task, num_samples
from geonorm_jax.train.tasks.molecules import MolecularTask
from geonorm_jax.train.tasks.nbody import NBodyTask

__all__ = ["Task", "NBodyTask", "MolecularTask", "get_task", "num_samples"]


def get_task(config) -> Task:
    """The :class:`Task` of ``config.task`` (``ValueError`` naming the tasks otherwise)."""
    if config.task == "nbody":
        return NBodyTask()
    if config.task == "molecules":
        m = config.molecules
        return MolecularTask(energy_weight=m.energy_weight, force_weight=m.force_weight)
    raise ValueError(f"task: expected 'nbody' or 'molecules'; received {config.task!r}")
