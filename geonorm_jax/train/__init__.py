"""Training: one loop for every task (:mod:`geonorm_jax.train.tasks`: charged N-body with the
EGNN, molecular energies and forces with Allegro, SchNet, GemNet-T or any model registered in
:mod:`geonorm_jax.models.registry`), optax Adam over an explicit
train state, seeds in one vmapped program, explosion detection, evaluation (MSE, energy and
force MAE, rotation/translation errors), orbax checkpoints with resume, data parallelism
with ``jax.sharding``, and the ``geonorm-jax train/eval/plot`` commands.

Typical use::

    from geonorm_jax import train
    config = train.merge(train.preset("quick"), {"train": {"seeds": [30, 40]}})
    summary = train.train(config, "runs/my-run")
    result = train.evaluate_run("runs/my-run", rte=True)
    allegro = train.train(train.preset("allegro-uracil"), "runs/allegro")
"""

from geonorm_jax.train.checkpoint import CheckpointError
from geonorm_jax.train.config import (
    PRESETS,
    ModelConfig,
    MolecularTaskConfig,
    OptimizerConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    load_config,
    merge,
    preset,
    save_config,
    to_dict,
    validate,
)
from geonorm_jax.train.eval_run import evaluate_run, format_rte_table
from geonorm_jax.train.evaluate import (
    EQUIVARIANCE_COLUMNS,
    RTE_COLUMNS,
    random_transforms,
    rte_errors,
    split_predictions,
    summarize_rte,
)
from geonorm_jax.train.lock import RunLockedError
from geonorm_jax.train.loop import train
from geonorm_jax.train.provenance import DataMismatchError
from geonorm_jax.train.rundir import check_resume, format_table, read_metrics, summarize
from geonorm_jax.train.setup import Setup, build
from geonorm_jax.train.state import TrainState, init_state
from geonorm_jax.train.step import make_optimizer, mse, train_epoch, train_step
from geonorm_jax.train.tasks import MolecularTask, NBodyTask, Task, get_task

__all__ = [
    "PRESETS",
    "ModelConfig",
    "MolecularTaskConfig",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "merge",
    "preset",
    "save_config",
    "to_dict",
    "validate",
    "evaluate_run",
    "format_rte_table",
    "EQUIVARIANCE_COLUMNS",
    "RTE_COLUMNS",
    "random_transforms",
    "rte_errors",
    "split_predictions",
    "summarize_rte",
    "check_resume",
    "format_table",
    "read_metrics",
    "summarize",
    "train",
    "CheckpointError",
    "DataMismatchError",
    "RunLockedError",
    "Setup",
    "build",
    "TrainState",
    "init_state",
    "make_optimizer",
    "mse",
    "train_epoch",
    "train_step",
    "Task",
    "NBodyTask",
    "MolecularTask",
    "get_task",
]
