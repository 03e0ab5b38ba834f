"""Build everything a run needs from its config, before any file is written.

:func:`build` asks the run's task (:mod:`geonorm_jax.train.tasks`) for the data and the
model, builds the optimizer, initialises the stacked state and compiles nothing yet. Every
bad input (missing or corrupt data, unknown normalization, a norm at a place it cannot go,
batch larger than the data) raises ``ValueError`` here, so the trainer can create the run
directory only afterwards.

``load_data`` is the N-body task's (:mod:`geonorm_jax.train.tasks.nbody`), re-exported here
where it was first defined; ``build_model`` and ``norm_place`` serve every task
(:mod:`geonorm_jax.train.tasks.base`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from geonorm_jax import parallel, xla
from geonorm_jax.data.config import SPLITS
from geonorm_jax.train.config import RunConfig, validate
from geonorm_jax.train.evaluate import random_transforms, split_predictions
from geonorm_jax.train.provenance import check_finite, describe
from geonorm_jax.train.state import TrainState, init_seed_state, init_state
from geonorm_jax.train.step import make_optimizer, train_epoch
from geonorm_jax.train.tasks import Task, get_task, num_samples
from geonorm_jax.train.tasks.base import build_model, norm_place
from geonorm_jax.train.tasks.nbody import load_data

__all__ = ["Setup", "FlatParams", "build", "build_model", "load_data", "norm_place", "SPLITS"]


class FlatParams:
    """Ravel a parameter tree into one vector ``[P]`` and back (static structure).

    ``ravel``/``unravel`` work inside ``jit``; :meth:`to_tree` does the same on the host with
    NumPy (no compilation). All leaves must share one dtype (the EGNN's are float32).
    """

    def __init__(self, abstract_tree):
        leaves, self.treedef = jax.tree.flatten(abstract_tree)
        self.shapes = [tuple(x.shape) for x in leaves]
        self.sizes = [int(np.prod(sh)) for sh in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        dtypes = {jnp.dtype(x.dtype) for x in leaves}
        if len(dtypes) > 1:
            names = sorted(map(str, dtypes))
            raise ValueError(f"model parameters: expected one dtype, got {names}")
        self.dtype = dtypes.pop() if dtypes else jnp.dtype(jnp.float32)
        self.size = int(self.offsets[-1])

    def ravel(self, tree) -> jax.Array:
        leaves = jax.tree.leaves(tree)
        return jnp.concatenate([jnp.reshape(x, (-1,)) for x in leaves]) if leaves else \
            jnp.zeros((0,), self.dtype)

    def _split(self, flat, reshape):
        parts = [reshape(flat[..., o : o + n], sh)
                 for o, n, sh in zip(self.offsets[:-1], self.sizes, self.shapes, strict=True)]
        return jax.tree.unflatten(self.treedef, parts)

    def unravel(self, flat: jax.Array):
        return self._split(flat, lambda a, sh: jnp.reshape(a, sh))

    def to_tree(self, flat) -> Any:
        """Host-side unravel; a leading ``[seeds]`` axis is kept."""
        flat = np.asarray(flat)
        lead = flat.shape[:-1]
        return self._split(flat, lambda a, sh: np.reshape(a, lead + sh))


@dataclasses.dataclass
class Setup:
    """Everything built from a config: task, data, model functions, optimizer, mesh, jitted
    fns.

    ``apply(flat_params, batch_stats, batch, training) -> (pred, batch_stats)`` and
    ``init_fn(key, sample=init_sample) -> {"params": flat, "batch_stats": ...}`` work on flat
    parameters (:class:`FlatParams`); ``flat.to_tree`` gives the Flax tree. ``model`` is the
    module users get (``load_potential``: total energies); ``apply`` runs the task's
    :meth:`~geonorm_jax.train.tasks.base.Task.training_model` of it (the molecular task's
    without its per-species energy shift when the targets are residuals), same parameters.
    ``info`` is the task's description of the loaded data (fitted statistics; JSON values);
    ``provenance`` the run's ``data.json`` record (:mod:`geonorm_jax.train.provenance`: the
    content hash of ``data`` and the task's description of its source).
    """

    config: RunConfig
    data: dict
    model: Any
    apply: Any
    init_fn: Any
    flat: FlatParams
    optimizer: optax.GradientTransformation
    steps_per_epoch: int
    devices: int
    mesh: Any
    task: Task | None = None
    info: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    init_sample: Any = None  # the example batch of ``init_fn`` (``{name: [B, ...]}``)

    @property
    def num_params(self) -> int:
        return self.flat.size

    def jit(self, fn, **kwargs):
        """:func:`geonorm_jax.xla.jit`: ``jax.jit`` with the backend's compiler options and
        this run's ``train.fast_compile``."""
        return xla.jit(fn, fast_compile=self.config.train.fast_compile, **kwargs)

    @functools.cached_property
    def init_one(self):
        """``key -> TrainState`` of one seed, jitted with the example batch as an argument:
        closed over, it would be a constant that XLA folds (GemNet's triplet tables took
        seconds of constant folding)."""
        return lambda key: self.init_one_with_sample(key, self.init_sample)

    @functools.cached_property
    def init_one_with_sample(self):
        """Jitted ``(key, sample) -> TrainState`` behind :attr:`init_one`."""
        return self.jit(lambda key, sample: init_seed_state(
            functools.partial(self.init_fn, sample=sample), self.optimizer, key))

    def init_state(self) -> TrainState:
        """The stacked initial state of all seeds, replicated over the mesh."""
        return parallel.replicate(self.mesh, init_state(self.init_one, self.config.train.seeds))

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and (replicated) shardings of :meth:`init_state`, computed without
        running anything (the target structure for restoring a checkpoint)."""
        one = jax.eval_shape(self.init_one_with_sample, jax.random.PRNGKey(0), self.init_sample)
        n, sharding = len(self.config.train.seeds), parallel.replicated(self.mesh)
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((n, *x.shape), x.dtype, sharding=sharding), one
        )

    @functools.cached_property
    def constrain(self):
        return parallel.batch_constraint(self.mesh)

    @functools.cached_property
    def eval_chunk(self) -> int:
        c, d = self.config.train.eval_batch_size, self.devices
        return -(-c // d) * d

    @functools.cached_property
    def epoch_fn(self):
        """``(state, train_data) -> (state, losses [seeds, batches], applied)``, state donated."""
        fn = functools.partial(
            train_epoch,
            apply=self.apply,
            optimizer=self.optimizer,
            batch_size=self.config.train.batch_size,
            threshold=self.config.train.explosion_threshold,
            constrain=self.constrain,
            loss=self.task.loss,
        )
        rep = parallel.replicated(self.mesh)
        return self.jit(jax.vmap(fn, in_axes=(0, None)), donate_argnums=0, out_shardings=rep)

    @functools.cached_property
    def metrics_fn(self):
        """``(params, batch_stats, split) -> (metrics, predictions)``: the task's per-sample
        metrics ``{name: [seeds, S]}`` (``"mse"`` and :attr:`Task.metrics`) and predictions
        ``[seeds, S, ...]``."""
        fn = lambda p, bs, d: split_predictions(
            self.apply, p, bs, d, chunk=self.eval_chunk, constrain=self.constrain,
            metrics=self.task.sample_metrics,
        )
        return self.jit(jax.vmap(fn, in_axes=(0, 0, None)))

    @functools.cached_property
    def eval_fn(self):
        """``(params, batch_stats, split) -> (MSE [seeds, S], predictions [seeds, S, ...])``:
        the ``"mse"`` of :attr:`metrics_fn` (the task's loss per sample)."""
        fn = lambda p, bs, d: split_predictions(
            self.apply, p, bs, d, chunk=self.eval_chunk, constrain=self.constrain,
            metrics=lambda pred, b: self.task.sample_metrics(pred, b)["mse"],
        )
        return self.jit(jax.vmap(fn, in_axes=(0, 0, None)))

    @functools.cached_property
    def update_best_fn(self):
        """``(state, val [seeds], epoch) -> (state, improved [seeds])``, state donated."""
        rep = parallel.replicated(self.mesh)
        return self.jit(jax.vmap(_update_best, in_axes=(0, 0, None)), donate_argnums=0,
                        out_shardings=rep)

    @functools.cached_property
    def transforms_fn(self):
        """Jitted :func:`~geonorm_jax.train.evaluate.random_transforms` (no model inside)."""
        return self.jit(random_transforms, static_argnums=2)


def _update_best(state: TrainState, val: jax.Array, epoch: jax.Array):
    # an exploded seed keeps the best of before its explosion
    improved = jnp.isfinite(val) & (val < state.best_val) & ~state.exploded
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, old)
    state = state._replace(
        best_params=pick(state.params, state.best_params),
        best_batch_stats=pick(state.batch_stats, state.best_batch_stats),
        best_val=jnp.where(improved, val.astype(jnp.float32), state.best_val),
        best_epoch=jnp.where(improved, epoch.astype(jnp.int32), state.best_epoch),
    )
    return state, improved


def build(config: RunConfig, *, data_dir=None, cache_dir=None, progress=False) -> Setup:
    """Validate ``config``, load the task's data, build model and optimizer (``ValueError`` if
    bad)."""
    validate(config)
    task = get_task(config)
    task.check(config)  # cheap checks first: unknown model or norm, bad place
    data, info = task.load(config, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    info = dict(info)
    source = info.pop("provenance", None)
    check_finite(data)  # the data check before training (the tasks check on loading, too)
    record = describe(data, config.task, source)
    model = task.build_model(config, info)  # what users get (load_potential): total energies
    trained = task.training_model(model, info)  # what the loss sees (may omit the energy shift)
    t = config.train
    devices = parallel.choose_devices(t.devices, t.batch_size)
    mesh = parallel.make_mesh(devices)
    data = {k: parallel.replicate(mesh, v) for k, v in data.items()}
    steps = num_samples(data["train"]) // t.batch_size
    optimizer = make_optimizer(config.optimizer, steps, t.epochs)
    count = getattr(task, "init_samples", None) or min(t.batch_size, 4)
    sample = jax.tree.map(lambda v: v[:count], data["train"])

    def tree_init(key, sample=sample):
        return task.init(trained, key, sample)

    try:  # shape problems of the norm/place surface here, before any file is written
        variables = jax.eval_shape(tree_init, jax.random.PRNGKey(0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"model: cannot initialise {config.model.norm!r} at place "
                         f"{norm_place(config)!r}: {e}") from None
    flat = FlatParams(variables["params"])

    def init_fn(key, sample=sample):
        v = tree_init(key, sample)
        return {"params": flat.ravel(v["params"]), "batch_stats": v.get("batch_stats", {})}

    def apply(params, batch_stats, batch, training):
        variables = {"params": flat.unravel(params), "batch_stats": batch_stats}
        return task.apply(trained, variables, batch, training)

    return Setup(config, data, model, apply, init_fn, flat, optimizer, steps, devices, mesh,
                 task, info, record, sample)
