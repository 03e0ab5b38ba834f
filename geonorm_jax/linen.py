"""Flax Linen wrappers around the pure ``Norm(init, apply)`` layers.

One generic module, :class:`NormLayer`, turns any :class:`~geonorm_jax.norms.base.Norm`
into a Linen module::

    layer = NormLayer(gj.norms.batch_norm(momentum=0.9))
    variables = layer.init(key, x)                                  # params + batch_stats
    y, updates = layer.apply(variables, x, mask=mask, training=True, mutable=["batch_stats"])

* the norm's ``params`` pytree is one Flax param called ``"norm"`` in ``"params"``;
* its ``state`` (running statistics, SpectralNorm's ``u``) is one variable called
  ``"norm"`` in ``"batch_stats"``, created only when the state is not empty;
* the key for ``Norm.init`` comes from the ``"params"`` rng;
* the state is never updated while initializing; it is stored when ``training=True`` and
  ``"batch_stats"`` is mutable (otherwise the new state is dropped, as the pure function
  would be called without keeping it).

Named classes (:class:`BatchNorm`, :class:`LayerNorm`, :class:`GroupNorm` with Flax's
argument names, :class:`GeoNorm`, and the normalizations of today's equivariant models:
:class:`EquivariantLayerNorm`, :class:`VecLayerNorm`, ...) are generated from their catalogue
entries by one factory (``_catalogue_layer``): the attributes are the pure
constructor's keyword arguments with its defaults, the docstring is the entry's paper,
formula, reduced axes and claimed symmetries. :func:`norm_layer` builds a ``NormLayer`` for
any catalogue name (``norm_layer("geo_norm", sigma="system")``). :class:`NormalizedDense` is a
Dense layer whose kernel passes through a weights-kind ``Norm`` (WeightNorm, SpectralNorm,
scaled weight standardization).

The same layers as Flax NNX modules (``nnx.Param`` / ``nnx.BatchStat``): :mod:`geonorm_jax.nnx`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from geonorm_jax import _wrapping
from geonorm_jax._wrapping import has_leaves
from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm

__all__ = [
    "NormLayer",
    "NormalizedDense",
    "norm_layer",
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
    "GeoNorm",
    "EquivariantLayerNorm",
    "EquivariantLayerNormSH",
    "EquivariantRMSNormSH",
    "DegreeLayerScale",
    "E3nnBatchNorm",
    "NormActivation",
    "SoftNormalization",
    "NormSE3",
    "VecLayerNorm",
    "TensorNorm",
    "MACEDensityNorm",
    "SpeciesNeighborNorm",
    "SE3CoordNorm",
    "MVLayerNorm",
    "GradeNorm",
    "GATrLayerNorm",
]

_COLLECTION = "batch_stats"


def _norm_variables(module: nn.Module, norm: Norm, x: Any, context: dict) -> tuple[Any, Any]:
    """Declare (or read) the norm's params and state on ``module``; returns (params, state).

    ``norm.init`` runs at most once, with the ``"params"`` rng, only when the variables do
    not exist yet.
    """
    cache: list = []

    def init_once(key):
        if not cache:
            cache.append(norm.init(key, x, **context))
        return cache[0]

    params = module.param("norm", lambda key: init_once(key)[0])
    if module.has_variable(_COLLECTION, "norm"):
        return params, module.get_variable(_COLLECTION, "norm")
    if not module.is_initializing():
        return params, {}
    state = init_once(None if cache else module.make_rng("params"))[1]
    if has_leaves(state):
        module.put_variable(_COLLECTION, "norm", state)
    return params, state


def _store_state(module: nn.Module, training: bool, new_state: Any) -> None:
    if (
        training
        and not module.is_initializing()
        and has_leaves(new_state)
        and module.is_mutable_collection(_COLLECTION)
    ):
        module.put_variable(_COLLECTION, "norm", new_state)


class NormLayer(nn.Module):
    """Any ``Norm`` as a Linen module (params in ``"params"``, state in ``"batch_stats"``).

    Attributes:
      norm: the pure layer, e.g. ``gj.norms.batch_norm()`` or ``gj.norms.make("geo_norm")``.
        Subclasses may leave it ``None`` and override :meth:`make_norm`.

    Call: ``layer(x, mask=None, training=False, **context)`` with ``x`` in the norm's
    layout (``[batch, nodes, channels]`` for features, ``[batch, nodes, 3]`` for
    coordinates, ...), ``mask [batch, nodes]``, and the norm's context (e.g. ``mu0``).
    Returns ``y`` with the shape and dtype of ``x``.
    """

    norm: Norm | None = None

    def make_norm(self) -> Norm:
        """The ``Norm`` this module applies (``self.norm`` unless a subclass builds one)."""
        if self.norm is None:
            raise ValueError(f"{type(self).__name__}: no norm given (norm=None)")
        return self.norm

    @nn.compact
    def __call__(self, x, *, mask=None, training: bool = False, **context):
        norm = self.make_norm()
        params, state = _norm_variables(self, norm, x, context)
        y, new_state = norm.apply(params, state, x, mask=mask, training=training, **context)
        _store_state(self, training, new_state)
        return y


def _catalogue_layer(class_name: str, catalogue_name: str,
                     fields: tuple[str, ...] | None = None) -> type[NormLayer]:
    """A :class:`NormLayer` subclass for the catalogue entry ``catalogue_name``.

    Its dataclass fields are the constructor's keyword arguments (``fields``: a subset, in
    that order) with the constructor's defaults (:attr:`NormInfo.hyperparameters`); its
    :meth:`~NormLayer.make_norm` is ``info.make(**fields)``; its docstring comes from the
    entry (paper, formula, reduced axes, claimed symmetries, notes).
    """
    info = catalog.get(catalogue_name)
    defaults = info.hyperparameters
    if fields is not None:
        defaults = {k: defaults[k] for k in fields}
    names = tuple(defaults)

    def make_norm(self) -> Norm:
        return _wrapping.make_norm(info, {k: getattr(self, k) for k in names})

    doc = _wrapping.docstring(info, defaults, wrapper="a Linen :class:`NormLayer`",
                    state_where='``"batch_stats"/"norm"``',
                    fields_title=f"Attributes (the keyword arguments of "
                                 f"``{info.constructor.__name__}``):")
    namespace = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": doc,
        "__annotations__": {k: Any for k in names},
        "make_norm": make_norm,
        **defaults,
    }
    return type(class_name, (NormLayer,), namespace)


# BatchNorm, LayerNorm and GroupNorm: the pure constructors already take Flax's argument
# names. GeoNorm exposes the two options of Eq. 5 (the others: ``norm_layer("geo_norm", ...)``).
BatchNorm = _catalogue_layer("BatchNorm", "batch_norm")
LayerNorm = _catalogue_layer("LayerNorm", "layer_norm")
GroupNorm = _catalogue_layer("GroupNorm", "group_norm")
GeoNorm = _catalogue_layer("GeoNorm", "geo_norm", fields=("sigma", "epsilon"))
# The normalizations of today's equivariant models (norms.irreps, norms.molecular,
# norms.clifford_norms), each with the pure constructor's arguments as attributes.
EquivariantLayerNorm = _catalogue_layer("EquivariantLayerNorm", "equivariant_layer_norm")
EquivariantLayerNormSH = _catalogue_layer("EquivariantLayerNormSH", "equivariant_layer_norm_sh")
EquivariantRMSNormSH = _catalogue_layer("EquivariantRMSNormSH", "equivariant_rms_norm_sh")
DegreeLayerScale = _catalogue_layer("DegreeLayerScale", "degree_layer_scale")
E3nnBatchNorm = _catalogue_layer("E3nnBatchNorm", "e3nn_batch_norm")
NormActivation = _catalogue_layer("NormActivation", "norm_activation")
SoftNormalization = _catalogue_layer("SoftNormalization", "soft_normalization")
NormSE3 = _catalogue_layer("NormSE3", "norm_se3")
VecLayerNorm = _catalogue_layer("VecLayerNorm", "vec_layer_norm_maxmin")
TensorNorm = _catalogue_layer("TensorNorm", "tensor_norm")
MACEDensityNorm = _catalogue_layer("MACEDensityNorm", "mace_density_norm")
SpeciesNeighborNorm = _catalogue_layer("SpeciesNeighborNorm", "species_neighbor_norm")
SE3CoordNorm = _catalogue_layer("SE3CoordNorm", "se3_coord_norm")
MVLayerNorm = _catalogue_layer("MVLayerNorm", "mv_layer_norm")
GradeNorm = _catalogue_layer("GradeNorm", "grade_norm")
GATrLayerNorm = _catalogue_layer("GATrLayerNorm", "gatr_layer_norm")


def norm_layer(name: str, **kwargs) -> NormLayer:
    """A :class:`NormLayer` for the catalogue entry ``name`` (``catalog.make(name, **kwargs)``).

    Example: ``norm_layer("geo_norm", sigma="system")``, ``norm_layer("batch_norm",
    momentum=0.9)``. Unknown names raise ``ValueError`` listing the valid ones.
    """
    return NormLayer(catalog.make(name, **kwargs))


class NormalizedDense(nn.Module):
    """A Dense layer ``y = x @ N(W) + b`` whose kernel passes through a weights-kind ``Norm``.

    The raw kernel ``W [in, features]`` is the param ``"kernel"``; the norm's params
    (WeightNorm's ``g``, scaled WS's gain) are the param ``"norm"``; its state
    (SpectralNorm's ``u``, ``sigma``) is ``"batch_stats"/"norm"``, updated only when
    ``training=True`` and ``"batch_stats"`` is mutable, never at init.

    Why not ``flax.linen.WeightNorm`` / ``SpectralNorm``? Those wrap an arbitrary layer
    instance and rewrite every matching variable with ``nn.map_variables``; they are a
    fixed formula each (WeightNorm: scale initialised to 1, so the initial weight is
    changed; SpectralNorm: takes ``update_stats=`` rather than ``training=``). Here the
    normalization is any ``Norm`` of the catalogue -- the same pure function the tests
    check against NumPy -- and the layer is a plain Dense, so the variables are easy to
    find and the call signature matches the other norm modules (``training=``). The cost:
    only Dense kernels, not arbitrary wrapped layers; wrap a pure ``Norm`` around any
    other kernel yourself with ``norm.apply``.

    Attributes:
      features: output size.
      weight_norm: a ``Norm`` with ``kind="weights"`` (``gj.norms.weight_norm()``, ...).
      use_bias: add a bias (not normalized).
      kernel_init, bias_init: Flax initializers for the raw kernel and the bias.
    """

    features: int
    weight_norm: Norm
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x, *, training: bool = False):
        if self.weight_norm.kind not in ("weights", None):
            raise ValueError(
                f"NormalizedDense: weight_norm must be a weights-kind Norm; received "
                f"{self.weight_norm.name!r} of kind {self.weight_norm.kind!r}"
            )
        x = jnp.asarray(x)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), dtype)
        params, state = _norm_variables(self, self.weight_norm, kernel, {})
        w, new_state = self.weight_norm.apply(params, state, kernel, training=training)
        _store_state(self, training, new_state)
        y = jnp.matmul(x, w)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), dtype)
        return y
