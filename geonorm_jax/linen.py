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

Convenience classes take Flax's argument names (:class:`BatchNorm`, :class:`LayerNorm`,
:class:`GroupNorm`, :class:`GeoNorm`); :func:`norm_layer` builds a ``NormLayer`` for any
catalogue name (``norm_layer("geo_norm", sigma="system")``). :class:`NormalizedDense` is a
Dense layer whose kernel passes through a weights-kind ``Norm`` (WeightNorm, SpectralNorm,
scaled weight standardization).

The same layers as Flax NNX modules (``nnx.Param`` / ``nnx.BatchStat``): :mod:`geonorm_jax.nnx`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax import norms as _norms
from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm
from geonorm_jax.norms.vision import batch_norm, group_norm, layer_norm

__all__ = [
    "NormLayer",
    "BatchNorm",
    "LayerNorm",
    "GroupNorm",
    "GeoNorm",
    "NormalizedDense",
    "norm_layer",
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


def _has_leaves(tree: Any) -> bool:
    return len(jax.tree_util.tree_leaves(tree)) > 0


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
    if _has_leaves(state):
        module.put_variable(_COLLECTION, "norm", state)
    return params, state


def _store_state(module: nn.Module, training: bool, new_state: Any) -> None:
    if (
        training
        and not module.is_initializing()
        and _has_leaves(new_state)
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


class BatchNorm(NormLayer):
    """:func:`geonorm_jax.norms.batch_norm` with Flax's argument names, masked."""

    momentum: float = 0.99
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: Any = None

    def make_norm(self) -> Norm:
        return batch_norm(
            momentum=self.momentum,
            epsilon=self.epsilon,
            use_scale=self.use_scale,
            use_bias=self.use_bias,
            axis_name=self.axis_name,
        )


class LayerNorm(NormLayer):
    """:func:`geonorm_jax.norms.layer_norm` (per node over channels unless ``reduce`` says)."""

    epsilon: float = 1e-6
    use_scale: bool = True
    use_bias: bool = True
    reduce: str = "channels"

    def make_norm(self) -> Norm:
        return layer_norm(
            epsilon=self.epsilon,
            use_scale=self.use_scale,
            use_bias=self.use_bias,
            reduce=self.reduce,
        )


class GroupNorm(NormLayer):
    """:func:`geonorm_jax.norms.group_norm` with Flax's argument names, masked."""

    num_groups: int = 32
    epsilon: float = 1e-6
    use_scale: bool = True
    use_bias: bool = True

    def make_norm(self) -> Norm:
        return group_norm(
            num_groups=self.num_groups,
            epsilon=self.epsilon,
            use_scale=self.use_scale,
            use_bias=self.use_bias,
        )


class GeoNorm(NormLayer):
    """:func:`geonorm_jax.norms.geo_norm` on coordinates ``[batch, nodes, 3]`` (GeoNorm, Eq. 5).

    ``sigma`` picks the reading (``"particle"``: Eq. 5, one scale per particle;
    ``"system"``: statistics over all nodes and the 3 coordinates, the Figure 3 caption).
    Other options: ``norm_layer("geo_norm", ...)``. Call with ``mu0=`` in the context.
    """

    sigma: str = "particle"
    epsilon: float = 1e-6

    def make_norm(self) -> Norm:
        return catalog.make("geo_norm", sigma=self.sigma, epsilon=self.epsilon)


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


# ------------------------------------------------------------------------------------------
# The normalizations of today's equivariant models (norms.irreps, norms.molecular,
# norms.clifford_norms), each with the pure constructor's arguments as attributes.
# ------------------------------------------------------------------------------------------


class EquivariantLayerNorm(NormLayer):
    """:func:`geonorm_jax.norms.equivariant_layer_norm` (EquiformerV2, one RMS per degree) on an
    IrrepsArray ``[batch, nodes, irreps]`` or vectors ``[batch, nodes, channels, 3]``."""

    normalization: str = "component"
    epsilon: float = 1e-5
    affine: bool = True

    def make_norm(self) -> Norm:
        return _norms.equivariant_layer_norm(normalization=self.normalization,
                                             epsilon=self.epsilon, affine=self.affine)


class EquivariantLayerNormSH(NormLayer):
    """:func:`geonorm_jax.norms.equivariant_layer_norm_sh` (EquiformerV2: LayerNorm on l = 0,
    one shared RMS for l > 0)."""

    normalization: str = "component"
    epsilon: float = 1e-5
    affine: bool = True
    std_balance_degrees: bool = True

    def make_norm(self) -> Norm:
        return _norms.equivariant_layer_norm_sh(
            normalization=self.normalization, epsilon=self.epsilon, affine=self.affine,
            std_balance_degrees=self.std_balance_degrees)


class EquivariantRMSNormSH(NormLayer):
    """:func:`geonorm_jax.norms.equivariant_rms_norm_sh` (EquiformerV2 / eSEN / UMA: one RMS
    over all degrees, l = 0 centred)."""

    normalization: str = "component"
    epsilon: float = 1e-5
    affine: bool = True
    centering: bool = True
    std_balance_degrees: bool = True

    def make_norm(self) -> Norm:
        return _norms.equivariant_rms_norm_sh(
            normalization=self.normalization, epsilon=self.epsilon, affine=self.affine,
            centering=self.centering, std_balance_degrees=self.std_balance_degrees)


class DegreeLayerScale(NormLayer):
    """:func:`geonorm_jax.norms.degree_layer_scale` (EquiformerV2's per-(l, channel) scale)."""

    scale_factor: float = 2.0

    def make_norm(self) -> Norm:
        return _norms.degree_layer_scale(scale_factor=self.scale_factor)


class E3nnBatchNorm(NormLayer):
    """:func:`geonorm_jax.norms.e3nn_batch_norm` (e3nn BatchNorm; ``instance=True``: per-graph
    instance norm). Running statistics live in ``"batch_stats"`` (batch mode only)."""

    instance: bool = False
    normalization: str = "component"
    momentum: float = 0.1
    epsilon: float = 1e-5
    affine: bool = True

    def make_norm(self) -> Norm:
        return _norms.e3nn_batch_norm(
            instance=self.instance, normalization=self.normalization, momentum=self.momentum,
            epsilon=self.epsilon, affine=self.affine)


class NormActivation(NormLayer):
    """:func:`geonorm_jax.norms.norm_activation` (e3nn-jax: each field times phi(its norm))."""

    activation: Any = "tanh"
    normalization: str = "component"
    scalars: str = "same"

    def make_norm(self) -> Norm:
        return _norms.norm_activation(activation=self.activation,
                                      normalization=self.normalization, scalars=self.scalars)


class SoftNormalization(NormLayer):
    """:func:`geonorm_jax.norms.soft_normalization` (e3nn-jax)."""

    max_component: float = 1.0

    def make_norm(self) -> Norm:
        return _norms.soft_normalization(max_component=self.max_component)


class NormSE3(NormLayer):
    """:func:`geonorm_jax.norms.norm_se3` (SE(3)-Transformer's NormSE3)."""

    epsilon: float = 1e-5
    norm_clamp: float = 2.0 ** -24
    nonlinearity: Any = "relu"

    def make_norm(self) -> Norm:
        return _norms.norm_se3(epsilon=self.epsilon, norm_clamp=self.norm_clamp,
                               nonlinearity=self.nonlinearity)


class VecLayerNorm(NormLayer):
    """:func:`geonorm_jax.norms.vec_layer_norm` (ViSNet; ``norm_type`` "max_min" or "rms")."""

    norm_type: str = "max_min"
    trainable: bool = True
    epsilon: float = 1e-12

    def make_norm(self) -> Norm:
        return _norms.vec_layer_norm(norm_type=self.norm_type, trainable=self.trainable,
                                     epsilon=self.epsilon)


class TensorNorm(NormLayer):
    """:func:`geonorm_jax.norms.tensor_norm` (TensorNet) on ``[batch, nodes, channels, 3, 3]``."""

    def make_norm(self) -> Norm:
        return _norms.tensor_norm()


class MACEDensityNorm(NormLayer):
    """:func:`geonorm_jax.norms.mace_density_norm`; call with ``positions=`` or
    ``edge_features=`` (and optionally ``adjacency=``)."""

    num_basis: int = 8
    r_max: float = 5.0

    def make_norm(self) -> Norm:
        return _norms.mace_density_norm(num_basis=self.num_basis, r_max=self.r_max)


class SpeciesNeighborNorm(NormLayer):
    """:func:`geonorm_jax.norms.species_neighbor_norm` (NequIP ``AvgNumNeighborsNorm``); call
    with ``species=`` when there are per-type values."""

    avg_num_neighbors: Any = None
    num_species: int = 1
    power: float = 0.5

    def make_norm(self) -> Norm:
        avg = self.avg_num_neighbors
        return _norms.species_neighbor_norm(
            avg_num_neighbors=tuple(avg) if isinstance(avg, list) else avg,
            num_species=self.num_species, power=self.power)


class SE3CoordNorm(NormLayer):
    """:func:`geonorm_jax.norms.se3_coord_norm` (MiDi's SE3Norm) on zero-centred coordinates."""

    epsilon: float = 1e-5

    def make_norm(self) -> Norm:
        return _norms.se3_coord_norm(epsilon=self.epsilon)


class MVLayerNorm(NormLayer):
    """:func:`geonorm_jax.norms.mv_layer_norm` (CGENN) on multivectors ``[..., channels, 2^n]``."""

    metric: tuple = (1.0, 1.0, 1.0)
    epsilon: float = 1e-6

    def make_norm(self) -> Norm:
        return _norms.mv_layer_norm(metric=tuple(self.metric), epsilon=self.epsilon)


class GradeNorm(NormLayer):
    """:func:`geonorm_jax.norms.grade_norm` (CGENN's per-grade NormalizationLayer)."""

    metric: tuple = (1.0, 1.0, 1.0)
    init_value: float = 0.0
    epsilon: float = 1e-6

    def make_norm(self) -> Norm:
        return _norms.grade_norm(metric=tuple(self.metric), init_value=self.init_value,
                                 epsilon=self.epsilon)


class GATrLayerNorm(NormLayer):
    """:func:`geonorm_jax.norms.gatr_layer_norm` (GATr's equi_layer_norm) on ``[..., 16]``."""

    epsilon: float = 0.01

    def make_norm(self) -> Norm:
        return _norms.gatr_layer_norm(epsilon=self.epsilon)
