"""Flax NNX modules around the pure ``Norm(init, apply)`` layers.

One generic module, :class:`NormModule`, turns any :class:`~geonorm_jax.norms.base.Norm` of
the catalogue (the survey's Table 1, Aalto et al.; the GeoNorm paper's Eqs. 3-5, Meng et
al.) or of your own into an ``nnx.Module``::

    from flax import nnx
    import geonorm_jax as gj
    from geonorm_jax.nnx import NormModule, norm_module

    bn = NormModule(gj.norms.batch_norm(momentum=0.9), x, rngs=nnx.Rngs(0))
    y = bn(x, mask=mask)                  # training: batch statistics, running ones updated
    bn.eval()                             # or nnx.view(bn, use_running_average=True)
    y = bn(x, mask=mask)                  # evaluation: the running statistics
    geo = norm_module("geo_norm", coords, rngs=nnx.Rngs(0), sigma="system")
    y = geo(coords, mask=mask, mu0=mu0)   # context passes through to Norm.apply

What goes where, compared with the Linen wrapper :class:`geonorm_jax.linen.NormLayer`
(which stores the same pytrees as ``"params"/"norm"`` and ``"batch_stats"/"norm"``):

* every leaf of the norm's ``params`` pytree is an ``nnx.Param`` in ``module.params`` (a
  dict with the norm's own keys, e.g. ``scale``, ``bias``, ``alpha``);
* every leaf of its ``state`` (BatchNorm's running ``mean``/``var``, SpectralNorm's ``u``
  and ``sigma``, the average neighbour count) is an ``nnx.BatchStat`` in ``module.stats``;
* the key for ``Norm.init`` is one draw of the ``params`` stream of ``rngs``.

Training and evaluation follow ``nnx.BatchNorm``: the attribute ``use_running_average``
(constructor default False) is set by ``module.train()`` / ``module.eval()``,
``module.set_attributes(use_running_average=...)`` or ``nnx.view(module,
use_running_average=...)``, and a call may override it. A call computes::

    y, new_state = norm.apply(params, state, x, mask=mask,
                              training=not use_running_average, **context)

and, in training mode only, writes ``new_state`` into the ``BatchStat`` variables (under
``stop_gradient``). For the batch-statistics layers this is the Flax update
``ra <- momentum * ra + (1 - momentum) * batch`` of the running averages; in evaluation mode
the running averages normalize and nothing is written. Layers without state (LayerNorm,
GeoNorm, ...) compute the same thing in both modes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from geonorm_jax._wrapping import example_input
from geonorm_jax.norms import catalog
from geonorm_jax.norms.base import Norm

__all__ = ["NormModule", "norm_module"]


def _is_variable(v: Any) -> bool:
    return isinstance(v, nnx.Variable)


def _values(tree: Any) -> Any:
    """The arrays held by a pytree of ``nnx.Variable`` leaves."""
    return jax.tree.map(lambda v: v[...], tree, is_leaf=_is_variable)


def _assign(variables: Any, values: Any, what: str) -> None:
    """Write ``values`` into the ``nnx.Variable`` leaves of ``variables`` (same structure,
    shapes and dtypes; ``ValueError`` naming both otherwise)."""
    leaves, treedef = jax.tree.flatten(variables, is_leaf=_is_variable)
    new_leaves, new_treedef = jax.tree.flatten(values)
    if new_treedef != treedef:
        raise ValueError(
            f"NormModule: {what} must have the structure {treedef}; received {new_treedef}"
        )
    for var, new in zip(leaves, new_leaves, strict=True):
        old = var[...]
        new = jnp.asarray(new)
        if new.shape != old.shape:
            raise ValueError(
                f"NormModule: {what} leaf of shape {old.shape} expected; received shape "
                f"{new.shape}"
            )
        var[...] = new.astype(old.dtype)


class NormModule(nnx.Module):
    r"""Any ``Norm`` as an ``nnx.Module``: ``nnx.Param`` parameters, ``nnx.BatchStat`` state.

    The layer computes the wrapped norm's formula; its docstring (or its catalogue entry,
    ``gj.norms.catalog.get(name)``: paper, formula, reduced axes) says which. For example
    BatchNorm (Ioffe & Szegedy, 2015; the survey's Table 1) reduces over batch and nodes
    {b, x}:

    .. math::
        y = \gamma \frac{x - \mu_{\{b,x\}}}{\sqrt{\sigma^2_{\{b,x\}} + \epsilon}} + \beta,
        \qquad r \leftarrow m\, r + (1 - m)\, (\mu, \sigma^2)_{\text{batch}}
        \;\text{(training only)}

    and GeoNorm (the GeoNorm paper, Eq. 5) reduces over the nodes {x} (the centroid) and the
    3 components {d} (``sigma_i``):
    :math:`y_i = g_i (x_i - \mu)/\sigma_i + b_i (\mu - \mu_0)/\|\mu - \mu_0\| + \mu_0`.

    Args:
      norm: the pure layer, e.g. ``gj.norms.batch_norm()`` or ``gj.norms.make("geo_norm")``.
      x: an example input in the norm's layout, or its shape (a tuple of ints; ``init`` then
        sees zeros of ``dtype``). Layouts: features ``[batch, nodes, channels]``, vectors
        ``[batch, nodes, channels, 3]`` or an ``e3nn.IrrepsArray [batch, nodes, irreps]``,
        coordinates ``[batch, nodes, 3]``, weights ``[fan_in, fan_out]``. Like
        ``nnx.BatchNorm``'s ``num_features``, it fixes the parameter shapes (``[channels]``,
        or ``[nodes, 1]`` for the GeoNorm paper's per-particle ``g_i``, ``b_i``).
        Data-dependent initializations (WeightNorm's ``g = ||v||``, an estimated average
        neighbour count) need an example rather than a shape.
      rngs: ``nnx.Rngs``; one key of its ``params`` stream goes to ``Norm.init``.
      mask: optional node mask ``[batch, nodes]`` for ``init`` (only the estimated average
        neighbour count uses it).
      use_running_average: the default mode; False (training) as in ``nnx.BatchNorm``.
      dtype: the dtype of the zeros built from a shape.
      **context: keyword context for ``Norm.init`` (e.g. ``num_neighbors=``).

    Attributes:
      norm: the wrapped ``Norm``.
      params: ``dict`` of ``nnx.Param`` (the norm's params pytree, same keys).
      stats: ``dict`` of ``nnx.BatchStat`` (the norm's state pytree; empty if none).
      use_running_average: evaluation mode when True.

    Call: ``module(x, *, mask=None, use_running_average=None, **context)`` with ``x`` in the
    norm's layout, ``mask [batch, nodes]`` (True = real node) and the norm's context
    (``mu0 [batch, 3]`` for GeoNorm, ``message`` for MessageNorm, ``num_neighbors`` or
    ``adjacency`` for the neighbour norms, ...). Returns ``y`` with the shape and dtype of
    ``x``.

    Raises:
      ValueError: if ``norm`` is not a ``Norm`` or ``x`` is neither an array nor a shape
        (and whatever the norm raises for an input of the wrong layout).
    """

    def __init__(
        self,
        norm: Norm,
        x: Any,
        *,
        rngs: nnx.Rngs,
        mask: Any = None,
        use_running_average: bool = False,
        dtype: Any = jnp.float32,
        **context,
    ):
        if not isinstance(norm, Norm):
            raise ValueError(
                "NormModule: expected a geonorm_jax.norms.Norm (e.g. gj.norms.batch_norm()); "
                f"received {type(norm).__name__}"
            )
        x = example_input(x, dtype, "NormModule")
        init_kw = {} if mask is None else {"mask": mask}
        params, state = norm.init(rngs.params(), x, **init_kw, **context)
        self.norm = norm
        self.params = nnx.data(jax.tree.map(nnx.Param, params))
        self.stats = nnx.data(jax.tree.map(nnx.BatchStat, state))
        self.use_running_average = use_running_average

    def __call__(self, x, *, mask=None, use_running_average: bool | None = None, **context):
        """Normalize ``x``; in training mode also update the running statistics.

        ``use_running_average`` overrides the module's attribute for this call.
        """
        ura = self.use_running_average if use_running_average is None else use_running_average
        training = not ura
        params, state = _values(self.params), _values(self.stats)
        y, new_state = self.norm.apply(params, state, x, mask=mask, training=training, **context)
        if training:
            _assign(self.stats, jax.lax.stop_gradient(new_state), "the norm's new state")
        return y

    def set_view(self, use_running_average: bool | None = None):
        """Used by ``nnx.view(module, use_running_average=...)``, as for ``nnx.BatchNorm``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def variables(self) -> tuple[Any, Any]:
        """``(params, state)`` as plain pytrees of arrays, as ``Norm.init`` returns them."""
        return _values(self.params), _values(self.stats)

    def set_variables(self, params: Any, state: Any = None) -> None:
        """Load ``params`` (and ``state`` unless None) from pure pytrees, e.g. those of
        ``Norm.init`` or of the Linen variables ``"params"/"norm"``, ``"batch_stats"/"norm"``.

        ``ValueError`` if a structure or a shape differs from the module's.
        """
        _assign(self.params, params, "params")
        if state is not None:
            _assign(self.stats, state, "state")


def norm_module(
    name: str,
    x: Any,
    *,
    rngs: nnx.Rngs,
    use_running_average: bool = False,
    init_context: dict | None = None,
    **kwargs,
) -> NormModule:
    """A :class:`NormModule` for the catalogue entry ``name`` (``catalog.make(name, **kwargs)``).

    Example: ``norm_module("geo_norm", coords, rngs=nnx.Rngs(0), sigma="system")``. Unknown
    names raise ``ValueError`` listing the valid ones. ``init_context`` is passed to
    ``Norm.init`` (e.g. ``{"mask": mask}``).
    """
    return NormModule(
        catalog.make(name, **kwargs),
        x,
        rngs=rngs,
        use_running_average=use_running_average,
        **(init_context or {}),
    )
