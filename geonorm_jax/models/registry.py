r"""The model registry: one :class:`ModelSpec` per model, read by everything that uses models.

A spec says, once, everything the trainer, the CLI, the bench, the audit, the experiments and
the notebooks need to know about a model:

* its ``name``, the ``task`` it serves (``"nbody"``: coordinates of charged particles;
  ``"molecules"``: energies and forces), a one-line ``description`` and the ``citation`` of
  its paper;
* ``module``: the Flax module class; ``defaults``: its published configuration in the
  module's own argument names;
* ``knobs``: how the three knobs shared by every model map onto the module's arguments::

      hidden      width         EGNN hidden, Allegro latent_dim, SchNet features,
                                GemNet-T emb_size_atom and emb_size_edge
      num_layers  depth         EGNN num_layers, Allegro num_layers, SchNet num_interactions,
                                GemNet-T num_blocks
      cutoff      radius (Å)    every model's cutoff (EGNN: optional kNN radius)

  The published names stay valid as aliases: ``model_kwargs={"latent_dim": 32}`` is read as
  ``hidden=32`` (giving both with different values is an error naming both);
* ``builtin_norm``: what the authors' own normalization inside the architecture is, as
  constructor arguments with it switched on (``True``) and off (``False``): Allegro's
  ``1/sqrt(N̄)`` on environment sums, SchNet's mean over neighbours, GemNet-T's fitted scale
  factors and ``1/sqrt(2)`` residual scaling (the survey's Section 4 switches);
* ``placement``: the model's named places for a catalogue normalization and the kind of
  layer each accepts (:class:`~geonorm_jax.models.placement.NormPlacement`);
* ``sizes``: named smaller configurations (``"tiny"`` for tests and smoke runs);
* ``init(module, key, batch)`` and ``predict(module, variables, batch, training)``: how to
  initialise the model from a batch of the task's arrays and what it predicts
  (:mod:`geonorm_jax.models.predict`: energies ``[B]`` and forces ``-dE/dx [B, A, 3]`` for
  potentials, positions ``[B, N, 3]`` for the N-body EGNN). A spec that leaves them out
  gets the standard pair of its task.

Every model takes ``training`` the same way, as an attribute or a call argument
(:func:`~geonorm_jax.models.layers.merge_training`). A model written outside the package
trains like the built-in ones after one call::

    from geonorm_jax.models import registry

    registry.register(registry.ModelSpec(
        name="my_model", task="molecules", module=MyModel,
        defaults=dict(hidden=32, num_layers=2, cutoff=5.0),
        placement=MY_PLACEMENT, description="...", citation="..."))

The built-in specs live beside their models (``EGNN_SPEC`` in :mod:`~.egnn`, ...) and
register when :mod:`geonorm_jax.models` is imported (which importing this module does first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from geonorm_jax.models.placement import NormPlacement

__all__ = [
    "ModelSpec",
    "KNOBS",
    "TASKS",
    "register",
    "unregister",
    "get",
    "names",
    "specs",
    "describe",
]

#: the knobs every model shares, in the registry's vocabulary
KNOBS: tuple[str, ...] = ("hidden", "num_layers", "cutoff")
#: the tasks a model can serve (:mod:`geonorm_jax.train.tasks`), each with the name of its
#: symmetry in the geometric-match audit (:data:`geonorm_jax.audit.TASK_SYMMETRIES`)
TASKS: dict[str, str] = {"nbody": "nbody-dynamics", "molecules": "md-energy-forces"}

_SAME_NAMES = MappingProxyType({k: (k,) for k in KNOBS})


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the library needs to know about one model (module docstring).

    Attributes:
      name: registry name (``"allegro"``); the ``model.name`` of a run configuration.
      task: ``"nbody"`` or ``"molecules"``.
      module: the Flax module class (or any callable returning a module from keywords).
      defaults: published configuration in the module's argument names.
      knobs: ``{knob: (module argument, ...)}`` for ``hidden``, ``num_layers``, ``cutoff``;
        a knob left out maps to the argument of the same name.
      builtin_norm: ``{True: kwargs, False: kwargs}``: the authors' normalization on / off.
      placement: where a catalogue norm may go (default: ``module.placement``).
      sizes: ``{size name: overrides of defaults}`` (``"tiny"``: tests and smoke runs).
      citation: the paper (and code) the defaults come from.
      description: one line for ``geonorm-jax models``.
      init: ``(module, key, batch) -> variables`` (default: the task's standard one).
      predict: ``(module, variables, batch, training) -> (prediction, collections)``.
    """

    name: str
    task: str
    module: Callable[..., Any]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    knobs: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    builtin_norm: Mapping[bool, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    placement: NormPlacement | None = None
    sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    citation: str = ""
    description: str = ""
    init: Callable | None = None
    predict: Callable | None = None

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"ModelSpec.name: expected an identifier; received {self.name!r}")
        if self.task not in TASKS:
            raise ValueError(f"ModelSpec.task: expected one of {list(TASKS)}; received "
                             f"{self.task!r}")
        unknown = sorted(set(self.knobs) - set(KNOBS))
        if unknown:
            raise ValueError(f"ModelSpec.knobs: expected keys among {KNOBS}; received {unknown}")
        knobs = {k: tuple(self.knobs.get(k, _SAME_NAMES[k])) for k in KNOBS}
        placement = self.placement or getattr(self.module, "placement", None)
        if not isinstance(placement, NormPlacement):
            raise ValueError(f"ModelSpec.placement of {self.name!r}: expected a NormPlacement "
                             "(or a module with a `placement` class attribute); received "
                             f"{type(placement).__name__}")
        from geonorm_jax.models import predict

        init, pred = predict.STANDARD[self.task]
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        set_("knobs", _frozen(knobs))
        set_("defaults", _frozen(self.defaults))
        set_("builtin_norm", _frozen({bool(k): _frozen(v) for k, v in self.builtin_norm.items()}))
        set_("sizes", _frozen({k: _frozen(v) for k, v in self.sizes.items()}))
        set_("placement", placement)
        set_("init", self.init or init)
        set_("predict", self.predict or pred)
        fields = self.fields()
        if fields is not None:
            wrong = sorted({a for args in knobs.values() for a in args} - fields)
            if wrong:
                raise ValueError(f"ModelSpec.knobs of {self.name!r}: {wrong} are not arguments "
                                 f"of {self.module.__name__}")

    # ------------------------------------------------------------------------------------
    def fields(self) -> frozenset[str] | None:
        """The module's constructor arguments (its dataclass fields), or None if unknown."""
        if not dataclasses.is_dataclass(self.module):
            return None
        return frozenset(f.name for f in dataclasses.fields(self.module)
                         if f.init and f.name not in ("parent", "name"))

    def knob_defaults(self) -> dict[str, Any]:
        """``{"hidden", "num_layers", "cutoff"}`` of the published configuration (the
        module's own default where the published configuration does not set it)."""
        out = {}
        for knob, args in self.knobs.items():
            arg = args[0]
            if arg in self.defaults:
                out[knob] = self.defaults[arg]
            else:
                out[knob] = _field_default(self.module, arg)
        return out

    def resolve(self, *, hidden: int | None = None, num_layers: int | None = None,
                cutoff: float | None = None, builtin_norm: bool | None = None,
                size: str | None = None, data: Mapping[str, Any] | None = None,
                model_kwargs: Mapping[str, Any] | None = None,
                where: str = "model") -> dict[str, Any]:
        """The module's constructor arguments: published defaults, then the built-in
        normalization switch and ``size``, the data statistics the module takes, the knobs and
        last ``model_kwargs`` (published names; a knob's published name is an alias).

        Args:
          hidden, num_layers, cutoff: the shared knobs (None: published value).
          builtin_norm: the authors' normalization on (True) or off (False); None: as
            ``size`` sets it, else on (the published model).
          size: a name in :attr:`sizes` applied over the defaults (a size may fix the
            built-in normalization, e.g. SchNet's ``"schnetpack"``: an explicit
            ``builtin_norm`` that contradicts it is an error).
          data: statistics fitted on the training data (``avg_num_neighbors``,
            ``species_shift``, ``species_scale``, ``max_atomic_number``); only those the
            module declares are passed.
          model_kwargs: further constructor arguments in the module's own names.
          where: the config key for error messages.

        Raises:
          ValueError: unknown size or argument; a knob given twice with different values;
            ``builtin_norm=False`` for a model that has none; an explicit ``builtin_norm``
            that contradicts ``size``.
        """
        kwargs = dict(self.defaults)
        if size is not None and size not in self.sizes:
            raise ValueError(f"{where}: size {size!r} of {self.name!r}: expected one of "
                             f"{sorted(self.sizes)}")
        sized = self.sizes[size] if size is not None else {}
        if builtin_norm is False and False not in self.builtin_norm:
            raise ValueError(f"{where}.builtin_norm: {self.name!r} has no built-in "
                             "normalization to switch off; expected true")
        switch = self.builtin_norm.get(builtin_norm is not False, {})
        clash = {k: v for k, v in switch.items() if k in sized and sized[k] != v}
        if clash and builtin_norm is not None:
            raise ValueError(f"{where}.builtin_norm = {builtin_norm}: size {size!r} of "
                             f"{self.name!r} sets {_clash_args(sized, clash)}; expected "
                             f"builtin_norm = {not builtin_norm} or no builtin_norm with it")
        kwargs.update({k: v for k, v in switch.items() if k not in clash})
        kwargs.update(sized)
        fields = self.fields()
        for key, value in (data or {}).items():
            if fields is None or key in fields:
                kwargs[key] = value
        extra = dict(model_kwargs or {})
        given = {"hidden": hidden, "num_layers": num_layers, "cutoff": cutoff}
        for knob, args in self.knobs.items():
            spellings = {f"{where}.{knob}": given[knob]} if given[knob] is not None else {}
            for arg in args:
                if arg in extra:
                    spellings[f"{where}.model_kwargs[{arg!r}]"] = extra.pop(arg)
            values = {_canonical(v) for v in spellings.values()}
            if len(values) > 1:
                both = ", ".join(f"{k} = {v!r}" for k, v in spellings.items())
                raise ValueError(f"{where}: the {knob} of {self.name!r} is given twice with "
                                 f"different values ({both}); expected one")
            if spellings:
                value = next(iter(spellings.values()))
                for arg in args:
                    kwargs[arg] = value
        if fields is not None:
            unknown = sorted(set(extra) - fields)
            if unknown:
                raise ValueError(f"{where}.model_kwargs: {unknown} are not arguments of "
                                 f"{self.module.__name__} ({self.name!r}); expected some of "
                                 f"{sorted(fields)}")
        kwargs.update(extra)
        return kwargs

    def cutoff_of(self, kwargs: Mapping[str, Any]) -> Any:
        """The cutoff in resolved constructor arguments (:meth:`resolve`)."""
        arg = self.knobs["cutoff"][0]
        return kwargs.get(arg, _field_default(self.module, arg))

    def build(self, kwargs: Mapping[str, Any], norm: Any = None, place: str | None = None):
        """The module from resolved arguments, with ``norm`` (a ``Norm`` or None) at ``place``
        (None: the placement's default place for the norm's kind).

        Raises:
          ValueError: a place the model does not have, a norm of the wrong kind, or a
            constructor that rejects the arguments.
        """
        kwargs = dict(kwargs)
        if norm is not None:
            if place is None:
                place = self.placement.default_place(norm.kind, norm.name)
            self.placement.check(norm, place)
            kwargs[self.placement.place(place).field] = norm
        try:
            return self.module(**kwargs)
        except TypeError as e:
            raise ValueError(f"model {self.name!r}: {e}") from None

    def norm_place(self, norm_kind: str | None, norm_name: str,
                   place: str | None = None) -> str:
        """``place`` checked against the placement, or the default place of the kind."""
        if place is not None:
            self.placement.place(place)  # ValueError naming the places
            return place
        return self.placement.default_place(norm_kind, norm_name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (``geonorm-jax models --json``)."""
        placement = self.placement
        return {
            "name": self.name,
            "task": self.task,
            "module": f"{self.module.__module__}.{self.module.__name__}",
            "description": self.description,
            "citation": self.citation,
            "defaults": {**_jsonable(self.knob_defaults()), **_jsonable(dict(self.defaults))},
            "knobs": {k: list(v) for k, v in self.knobs.items()},
            "builtin_norm": {str(k).lower(): _jsonable(dict(v))
                             for k, v in self.builtin_norm.items()},
            "norm_places": [{"name": p.name, "kinds": list(p.kinds),
                             "description": p.description} for p in placement.places],
            "default_places": {kind: place for kind, place in placement.defaults},
            "sizes": {k: _jsonable(dict(v)) for k, v in self.sizes.items()},
        }


def _clash_args(sized: Mapping[str, Any], clash: Mapping[str, Any]) -> str:
    """``k = v`` of the size's values of the clashing arguments, for error messages."""
    return ", ".join(f"{k} = {sized[k]!r}" for k in clash)


def _canonical(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _field_default(module, arg: str) -> Any:
    if dataclasses.is_dataclass(module):
        for f in dataclasses.fields(module):
            if f.name == arg and f.default is not dataclasses.MISSING:
                return f.default
    return None


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` under ``spec.name`` and return it.

    Raises:
      ValueError: the name is taken (pass ``replace=True`` to redefine it).
    """
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"register: expected a ModelSpec; received {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise ValueError(f"register: a model called {spec.name!r} is already registered "
                         "(replace=True redefines it)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a registered model (tests, notebooks); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def get(name: str) -> ModelSpec:
    """The spec of model ``name``.

    Raises:
      ValueError: unknown name (listing the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"model.name: expected one of {list(_REGISTRY)}; received "
                         f"{name!r}") from None


def names(task: str | None = None) -> tuple[str, ...]:
    """Registered model names (of ``task`` only, if given), in registration order."""
    return tuple(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def specs(task: str | None = None) -> tuple[ModelSpec, ...]:
    """Registered specs (of ``task`` only, if given)."""
    return tuple(get(n) for n in names(task))


def describe(task: str | None = None) -> list[dict[str, Any]]:
    """:meth:`ModelSpec.to_json` of every registered model."""
    return [s.to_json() for s in specs(task)]
