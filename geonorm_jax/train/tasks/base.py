"""The task interface: what the one training loop needs from a learning problem.

A *task* turns a :class:`~geonorm_jax.train.config.RunConfig` into padded arrays and a model,
and says how predictions are scored. The loop (:mod:`geonorm_jax.train.loop`), the step
(:mod:`geonorm_jax.train.step`), evaluation, checkpoints, resume, data parallelism and the
progress bar know nothing else about it. Two tasks exist:

* ``"nbody"`` (:class:`~geonorm_jax.train.tasks.nbody.NBodyTask`): the charged N-body
  simulation, EGNN, coordinate MSE (the EGNN and GeoNorm papers);
* ``"molecules"`` (:class:`~geonorm_jax.train.tasks.molecules.MolecularTask`): energies and
  forces of molecular-dynamics frames, Allegro or SchNet, a weighted energy-and-force MSE
  (the survey's Section 4).

Contract (shapes: ``S`` samples of a split, ``B`` a batch):

* The model comes from the registry (:mod:`geonorm_jax.models.registry`): ``model.name``
  names a :class:`~geonorm_jax.models.registry.ModelSpec` of the run's task;
  :func:`resolve_model` turns ``config.model`` (and statistics fitted on the training data)
  into the module's constructor arguments, :func:`build_model` into the module with the
  catalogue norm at its place. The spec's ``init`` and ``predict`` are :meth:`Task.init` and
  :meth:`Task.apply`; no task knows a model by name.
* :meth:`Task.load` returns ``{"train", "valid", "test"}``, each a dict of arrays with the
  sample axis first (``[S, ...]``), all of fixed shape: the loop gathers batches with
  ``jnp.take(..., axis=0)`` and shards that axis over devices. It also returns ``info``, a
  dict of plain JSON values (statistics fitted on the training split, data provenance) that
  :meth:`Task.build_model` may use and the run records.
* :meth:`Task.apply` maps ``(model, variables, batch, training)`` to ``(prediction,
  batch_stats)``; the prediction is any pytree.
* :meth:`Task.loss` is the scalar training loss of a batch; :meth:`Task.sample_metrics`
  gives per-sample metrics ``{name: [B]}``. Its ``"mse"`` entry is the loss per sample (its
  mean over a split is the validation/test figure used for model selection: ``val_mse`` and
  ``test_mse`` in ``metrics.jsonl``); further entries (:attr:`Task.metrics`) are recorded as
  ``val_<name>`` and ``test_<name>``.
* What counts as an explosion is the trainer's rule for every task: a non-finite loss or
  gradient, or a loss above ``train.explosion_threshold`` (the molecular presets raise it,
  since an unnormalized energy loss starts many orders of magnitude above the normalized
  one without diverging).
"""

from __future__ import annotations

import abc
from typing import Any

import jax

__all__ = ["Task", "num_samples", "model_spec", "resolve_model", "norm_place", "build_model"]


def num_samples(split: dict) -> int:
    """The sample count ``S`` of a split (the leading axis of its arrays)."""
    leaves = jax.tree.leaves(split)
    if not leaves:
        raise ValueError("a data split: expected arrays with a leading sample axis; got none")
    return int(leaves[0].shape[0])


def model_spec(config):
    """The :class:`~geonorm_jax.models.registry.ModelSpec` of ``config.model.name``.

    Raises:
      ValueError: an unknown model, or one of another task (both named).
    """
    from geonorm_jax.models import registry

    spec = registry.get(config.model.name)
    if spec.task != config.task:
        raise ValueError(f"model.name: {spec.name!r} is a model of task {spec.task!r}; the "
                         f"{config.task!r} task trains {list(registry.names(config.task))}")
    return spec


def resolve_model(config, data: dict | None = None) -> dict:
    """The constructor arguments of ``config.model`` (:meth:`ModelSpec.resolve`): published
    defaults, the built-in normalization switch, the training-data statistics in ``data``
    that the module declares, the knobs, then ``model_kwargs``."""
    m = config.model
    return model_spec(config).resolve(hidden=m.hidden, num_layers=m.num_layers,
                                      cutoff=m.cutoff, builtin_norm=m.builtin_norm, data=data,
                                      model_kwargs=m.model_kwargs)


def norm_place(config) -> str | None:
    """The place of ``model.norm``: explicit (checked against the model's places) or the
    model's default for the catalogue entry's kind; None without a norm."""
    m = config.model
    if m.norm is None:
        return None
    from geonorm_jax.norms import catalog

    return model_spec(config).norm_place(catalog.get(m.norm).kind, m.norm, m.norm_place)


def build_model(config, data: dict | None = None):
    """The Flax module of ``config.model`` with its catalogue norm at its place.

    Raises:
      ValueError: unknown model, norm, place or constructor argument (named).
    """
    place = norm_place(config)
    norm = None
    if place is not None:
        from geonorm_jax.norms import catalog

        try:
            norm = catalog.make(config.model.norm, **config.model.norm_kwargs)
        except TypeError as e:
            raise ValueError(f"model.norm_kwargs: {e}") from None
    return model_spec(config).build(resolve_model(config, data), norm, place)


class Task(abc.ABC):
    """A learning problem for :func:`geonorm_jax.train.train` (see the module docstring)."""

    name: str = ""
    #: per-sample metrics recorded besides ``mse`` (``val_<name>``, ``test_<name>``)
    metrics: tuple[str, ...] = ()
    #: units of :attr:`metrics`, for tables and plots
    metric_units: dict[str, str] = {}
    #: samples of the example batch given to :meth:`init` (None: ``min(batch_size, 4)``)
    init_samples: int | None = None

    def __init__(self, spec=None):
        #: the :class:`~geonorm_jax.models.registry.ModelSpec` of the run's model
        self.spec = spec

    @classmethod
    def from_config(cls, config) -> Task:
        """The task of ``config`` (its model's spec; tasks with settings read them here)."""
        return cls(model_spec(config))

    def check(self, config) -> None:  # noqa: B027 - optional hook
        """Cheap checks before any data is loaded (unknown model, norm at a wrong place).
        ``ValueError`` naming the key."""

    @abc.abstractmethod
    def load(self, config, *, data_dir=None, cache_dir=None,
             progress: bool = False) -> tuple[dict, dict]:
        """``(splits, info)``: ``{"train", "valid", "test"}`` dicts of ``[S, ...]`` arrays, and
        a dict of JSON values (fitted statistics, provenance)."""

    def build_model(self, config, info: dict) -> Any:
        """The Flax module of ``config.model`` (:func:`build_model`; ``ValueError`` if
        misconfigured)."""
        self.spec = model_spec(config)
        return build_model(config)

    def training_model(self, model, info: dict) -> Any:
        """The module that is trained and evaluated, given ``model``, the one users get from
        the run (``Setup.model``, ``load_potential``); both share one parameter tree. The
        default: ``model`` itself (the molecular task drops the per-species energy shift when
        it trains on residual energies)."""
        return model

    def _spec(self):
        if self.spec is None:
            raise ValueError(f"{type(self).__name__}: no model spec; build the task with "
                             "geonorm_jax.train.tasks.get_task(config)")
        return self.spec

    def init(self, model, key: jax.Array, batch: dict) -> dict:
        """Flax variables ``{"params", "batch_stats"?}`` from a small example ``batch`` (the
        model spec's ``init``)."""
        return self._spec().init(model, key, batch)

    def apply(self, model, variables: dict, batch: dict, training: bool):
        """``(prediction, batch_stats)`` of ``batch`` (the model spec's ``predict``);
        ``batch_stats`` updated when ``training`` (running statistics of norms), else
        returned unchanged."""
        return self._spec().predict(model, variables, batch, training)

    @abc.abstractmethod
    def loss(self, pred, batch: dict) -> jax.Array:
        """The scalar training loss of a batch."""

    @abc.abstractmethod
    def sample_metrics(self, pred, batch: dict) -> dict[str, jax.Array]:
        """``{"mse": [B], **{m: [B] for m in self.metrics}}``, per sample."""

    def describe(self, info: dict) -> str:
        """A one-line description of the loaded data for logs (default: the task name)."""
        return self.name
