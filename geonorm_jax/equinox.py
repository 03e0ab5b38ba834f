"""Equinox modules around the pure ``Norm(init, apply)`` layers (the ``equinox`` extra).

One generic module, :class:`NormModule`, turns any :class:`~geonorm_jax.norms.base.Norm` into
an ``eqx.Module``, and every entry of the catalogue (the survey's Table 1, Aalto et al.; the
GeoNorm paper's Eqs. 3-5, Meng et al.; the normalizations of today's equivariant models) has a
named subclass generated from its entry (:data:`CLASSES`: ``BatchNorm``, ``GeoNorm``,
``GeoNormSystem``, ``EquivariantLayerNorm``, ...)::

    import equinox as eqx
    from geonorm_jax import equinox as gjx

    bn, state = eqx.nn.make_with_state(gjx.BatchNorm)(x, key=key, momentum=0.9)
    y, state = bn(x, state, mask=mask)              # training: running statistics updated
    y, _ = eqx.nn.inference_mode(bn)(x, state)      # evaluation: the running statistics
    geo = gjx.GeoNorm(coords, key=key, sigma="system")
    y = geo(coords, mask=mask, mu0=mu0)             # no state: returns y alone

It follows Equinox's own ``eqx.nn.BatchNorm``:

* the norm's ``params`` pytree is the field ``params`` (its arrays are the module's trainable
  leaves, found by ``eqx.filter(module, eqx.is_array)``);
* its ``state`` (running statistics, SpectralNorm's ``u`` and ``sigma``, an average
  neighbour count) lives in an ``eqx.nn.State`` at ``module.state_index``
  (``eqx.nn.StateIndex``), created by ``eqx.nn.make_with_state``; a layer without state has
  ``state_index = None`` and is called without one;
* the field ``inference`` (False: training) is what ``eqx.nn.inference_mode`` flips; a call
  may override it with ``inference=`` (Equinox's keyword) or ``training=`` (the Linen
  wrapper's keyword; ``training = not inference``).

A call computes ``y, new = norm.apply(params, state.get(state_index), x, mask=mask,
training=training, **context)`` and, when training, stores ``stop_gradient(new)`` in the
returned state. The layer is a ``eqx.nn.StatefulLayer``, so ``eqx.nn.Sequential`` passes the
state to the layers that have one.

Importing :mod:`geonorm_jax` does not import Equinox; this module needs it (``pip install
'geonorm-jax[equinox]'``). The same layers for Flax: :mod:`geonorm_jax.linen`,
:mod:`geonorm_jax.nnx`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import equinox as eqx
except ImportError as e:  # pragma: no cover (the equinox extra is installed in CI)
    raise ImportError(
        "geonorm_jax.equinox needs Equinox, which is the 'equinox' extra: "
        "pip install 'geonorm-jax[equinox]' (or pip install equinox); "
        f"received ImportError: {e}"
    ) from e
import jax
import jax.numpy as jnp

from geonorm_jax import _wrapping
from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm

__all__ = ["NormModule", "norm_module", "CLASSES"]


class NormModule(eqx.nn.StatefulLayer):
    r"""Any ``Norm`` as an ``eqx.Module``: params as pytree leaves, state in ``eqx.nn.State``.

    The layer computes the wrapped norm's formula (its catalogue entry,
    ``gj.norms.catalog.get(name)``, gives the paper, formula and reduced axes). For example
    BatchNorm (Ioffe & Szegedy, 2015; the survey's Table 1) reduces over batch and nodes
    {b, x}:

    .. math::
        y = \gamma \frac{x - \mu_{\{b,x\}}}{\sqrt{\sigma^2_{\{b,x\}} + \epsilon}} + \beta,
        \qquad r \leftarrow m\, r + (1 - m)\, (\mu, \sigma^2)_{\text{batch}}
        \;\text{(training only)}

    Args:
      norm: the pure layer, e.g. ``gj.norms.batch_norm()`` or ``gj.norms.make("geo_norm")``.
      x: an example input in the norm's layout, or its shape (a tuple of ints; ``init`` then
        sees zeros of ``dtype``): features ``[batch, nodes, channels]``, vectors
        ``[batch, nodes, channels, 3]`` or an ``e3nn.IrrepsArray [batch, nodes, irreps]``,
        coordinates ``[batch, nodes, 3]``, weights ``[fan_in, fan_out]``. It fixes the
        parameter shapes; data-dependent initializations need an example.
      key: the ``jax.random`` key for ``Norm.init``.
      mask: optional node mask ``[batch, nodes]`` for ``init``.
      inference: the default mode (False: training), as ``eqx.nn.BatchNorm``'s.
      dtype: the dtype of the zeros built from a shape.
      **context: keyword context for ``Norm.init`` (e.g. ``num_neighbors=``).

    Attributes:
      norm: the wrapped ``Norm`` (a static field).
      params: the norm's params pytree (``dict`` of arrays, the norm's own keys).
      state_index: ``eqx.nn.StateIndex`` of the norm's state pytree, or None for a layer
        without state.
      inference: evaluation mode when True.

    Call: ``module(x, state=None, *, mask=None, inference=None, training=None, key=None,
    **context)`` with ``x`` in the norm's layout, ``mask [batch, nodes]`` (True = real node)
    and the norm's context (``mu0 [batch, 3]`` for GeoNorm, ``message`` for MessageNorm,
    ``num_neighbors``/``adjacency``, the flat layout's ``segment_ids``/``num_graphs`` or
    ``n_node``, ...). Returns ``(y, state)`` for a layer with state (``state`` required),
    ``y`` otherwise (``(y, state)`` unchanged when a state is passed anyway); ``y`` has the
    shape and dtype of ``x``. ``key`` is accepted for ``eqx.nn.Sequential`` and unused.

    Raises:
      ValueError: ``norm`` is not a ``Norm``; ``x`` is neither an array nor a shape; a layer
        with state called without one; ``training`` and ``inference`` that disagree.
    """

    norm: Norm = eqx.field(static=True)
    params: Any
    state_index: eqx.nn.StateIndex | None
    inference: bool

    def __init__(self, norm: Norm, x: Any, *, key: Any, mask: Any = None,
                 inference: bool = False, dtype: Any = jnp.float32, **context):
        if not isinstance(norm, Norm):
            raise ValueError(
                "NormModule: expected a geonorm_jax.norms.Norm (e.g. gj.norms.batch_norm()); "
                f"received {type(norm).__name__}"
            )
        x = _wrapping.example_input(x, dtype, type(self).__name__)
        init_kw = {} if mask is None else {"mask": mask}
        params, state = norm.init(key, x, **init_kw, **context)
        self.norm = norm
        self.params = params
        self.state_index = eqx.nn.StateIndex(state) if _wrapping.has_leaves(state) else None
        self.inference = bool(inference)

    def is_stateful(self) -> bool:
        """Whether the layer has running state (``eqx.nn.Sequential`` then passes it)."""
        return self.state_index is not None

    def __call__(self, x, state: eqx.nn.State | None = None, *, mask=None,
                 inference: bool | None = None, training: bool | None = None, key=None,
                 **context):
        """Normalize ``x``; in training mode also update the running state (class doc)."""
        del key
        if inference is not None and training is not None and bool(training) == bool(inference):
            raise ValueError(
                f"{type(self).__name__}: training and inference must disagree (training = not "
                f"inference); received training={training!r}, inference={inference!r}"
            )
        if training is None:
            training = not (self.inference if inference is None else inference)
        if self.state_index is None:
            y, _ = self.norm.apply(self.params, {}, x, mask=mask, training=training, **context)
            return y if state is None else (y, state)
        if state is None:
            raise ValueError(
                f"{type(self).__name__}: expected the eqx.nn.State of this layer's running "
                f"state ({self.norm.name}), e.g. from eqx.nn.make_with_state; received None"
            )
        norm_state = state.get(self.state_index)
        y, new_state = self.norm.apply(self.params, norm_state, x, mask=mask,
                                       training=training, **context)
        if training:
            new_state = jax.tree.map(lambda new, old: jnp.asarray(new).astype(old.dtype),
                                     jax.lax.stop_gradient(new_state), norm_state)
            state = state.set(self.state_index, new_state)
        return y, state


def norm_module(name: str, x: Any, *, key: Any, inference: bool = False,
                init_context: Mapping[str, Any] | None = None, **kwargs) -> NormModule:
    """A :class:`NormModule` for the catalogue entry ``name`` (``catalog.make(name, **kwargs)``).

    Example: ``norm_module("geo_norm", coords, key=key, sigma="system")``. Unknown names
    raise ``ValueError`` listing the valid ones. ``init_context`` is passed to ``Norm.init``
    (e.g. ``{"mask": mask}``). For a layer with state, build it with
    ``eqx.nn.make_with_state(norm_module)(name, x, key=key)``.
    """
    return NormModule(catalog.make(name, **kwargs), x, key=key, inference=inference,
                      **dict(init_context or {}))


def _catalogue_class(catalogue_name: str) -> type[NormModule]:
    """The :class:`NormModule` subclass of one catalogue entry.

    Its constructor takes the example input and ``key`` as :class:`NormModule` does, and the
    entry's hyperparameters as keyword arguments (defaults: :attr:`NormInfo.defaults`, what
    ``catalog.make(catalogue_name)`` builds); its docstring comes from the entry.
    """
    info = catalog.get(catalogue_name)
    defaults = info.defaults
    name = _wrapping.class_name(catalogue_name)

    def __init__(self, x: Any, *, key: Any, mask: Any = None, inference: bool = False,
                 dtype: Any = jnp.float32, init_context: Mapping[str, Any] | None = None,
                 **hyperparameters):
        unknown = sorted(set(hyperparameters) - set(defaults))
        if unknown:
            raise ValueError(
                f"{name}: expected keyword arguments among {sorted(defaults)} (the "
                f"hyperparameters of {info.constructor.__name__}); received {unknown}"
            )
        NormModule.__init__(self, _wrapping.make_norm(info, hyperparameters), x, key=key,
                            mask=mask, inference=inference, dtype=dtype,
                            **dict(init_context or {}))

    __init__.__qualname__ = f"{name}.__init__"
    doc = _wrapping.docstring(
        info, defaults, wrapper="an Equinox :class:`NormModule`",
        state_where="an ``eqx.nn.State`` at ``module.state_index``",
        fields_title=f"Keyword arguments (those of ``{info.constructor.__name__}``, with this "
                     "entry's defaults; build with ``Class(x, key=key, **kwargs)``):")
    namespace = {"__module__": __name__, "__qualname__": name, "__doc__": doc,
                 "__init__": __init__, "catalogue_name": catalogue_name}
    return type(name, (NormModule,), namespace)


#: ``{catalogue name: generated NormModule subclass}`` for every entry of the catalogue.
CLASSES: Mapping[str, type[NormModule]] = {
    e.name: _catalogue_class(e.name) for e in catalog.CATALOG
}
globals().update({cls.__name__: cls for cls in CLASSES.values()})
__all__ += [cls.__name__ for cls in CLASSES.values()]


def __dir__() -> list[str]:
    return sorted(set(globals()))
