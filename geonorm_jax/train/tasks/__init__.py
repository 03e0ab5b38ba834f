"""Tasks for the one training loop: charged N-body (``"nbody"``) and molecular energies and
forces (``"molecules"``). :func:`get_task` gives the task of a run configuration, holding the
registered model it trains; the interface is :class:`~geonorm_jax.train.tasks.base.Task`."""

from __future__ import annotations

from geonorm_jax.train.tasks.base import (
    Task,
    build_model,
    model_spec,
    norm_place,
    num_samples,
    resolve_model,
)
from geonorm_jax.train.tasks.molecules import MolecularTask
from geonorm_jax.train.tasks.nbody import NBodyTask

__all__ = ["Task", "NBodyTask", "MolecularTask", "TASKS", "get_task", "num_samples",
           "model_spec", "resolve_model", "norm_place", "build_model"]

#: ``{task name: Task class}``; the names are :data:`geonorm_jax.models.registry.TASKS`
TASKS: dict[str, type[Task]] = {"nbody": NBodyTask, "molecules": MolecularTask}


def get_task(config) -> Task:
    """The :class:`Task` of ``config.task``, holding the spec of ``config.model.name``.

    Raises:
      ValueError: unknown task or model, or a model of another task (named).
    """
    if config.task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}; received {config.task!r}")
    return TASKS[config.task].from_config(config)
