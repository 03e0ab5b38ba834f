"""The irreps plumbing the irreps-feature norms share: layout checks, chunks, scaled statistics.

Layouts. Two node layouts, chosen by ``apply``'s keywords (the machinery of
:func:`geonorm_jax.norms.base.graph_layout`, shared with the graph layers):

* padded, this library's: an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]`` with ``mask
  [batch, nodes]``;
* flat, e3nn-jax's and jraph's: an ``e3nn.IrrepsArray`` ``[num_nodes, irreps]`` with
  ``segment_ids [num_nodes]`` and a static ``num_graphs``, or ``n_node [num_graphs]``
  (``jraph.GraphsTuple.n_node``); an optional ``mask [num_nodes]`` marks padded nodes (jraph's
  ``get_node_padding_mask`` for the trailing padding graph), and so do nodes past
  ``sum(n_node)`` or with ids outside ``[0, num_graphs)``.

The irreps are chunks ``mul x (l, p)``; chunk ``k`` is ``[..., mul_k, 2l_k + 1]`` (``...`` =
``batch, nodes`` or ``num_nodes``; e3nn-jax's mul-major order), its ``mul_k`` copies are the
*channels* (``v``) and its ``2l + 1`` components the ``m`` axis (``d``). A plain array
``[batch, nodes, channels, 3]`` (flat: ``[num_nodes, channels, 3]``) is accepted too and read
as ``channels x 1o`` (:func:`as_irreps`; the output has the input's shape). Per-irrep
parameters have one entry per channel of every chunk (``irreps.num_irreps``, chunk order);
"scalars" that are centred or get a bias are the even ``0e`` chunks only
(``_is_even_scalar``, e3nn's ``ir.is_scalar()``).

Helpers (private to the irreps family, used by :mod:`~geonorm_jax.norms.irreps_layer`,
:mod:`~geonorm_jax.norms.irreps_batch` and :mod:`~geonorm_jax.norms.irreps_gate`):
``_prepare`` (checks, then the chunks ``[..., mul, 2l+1]`` in the compute dtype with padded
nodes set to 0, and the :class:`~geonorm_jax.norms.base.Graphs` of the input), ``_assemble``
(back to the input's layout and dtype), ``_group_sum`` / ``_group_max_abs`` (over the real
nodes of each graph or of the whole batch, in either layout), ``_param_slices``,
``_affine_init`` / ``_affine_shapes`` (``scale [num_irreps]``, ``bias [n_0e]``),
``_scale_and_eps`` (``s = max(1, max|x|)`` per node and ``eps / s^2``), ``_sq_stat``
(``mean_m`` or ``sum_m`` of ``x^2``), ``_per_channel`` (a parameter slice broadcast on a
chunk).
"""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import (
    LAYOUT_KEYS,
    Graphs,
    graph_layout,
    graph_max_abs,
    graph_sum,
    zero_padding,
)

__all__ = ["as_irreps", "is_flat"]

_PADDED = "an IrrepsArray [batch, nodes, irreps] or vectors [batch, nodes, channels, 3]"
_FLAT = ("an IrrepsArray [num_nodes, irreps] or vectors [num_nodes, channels, 3] (the flat "
         "layout, selected by segment_ids= or n_node=)")
_HINT = (" (a flat [num_nodes, irreps] input needs segment_ids= and num_graphs=, or n_node=)")


# --------------------------------------------------------------------------------------------
# Plumbing: layout checks, chunks, scaled statistics
# --------------------------------------------------------------------------------------------


def is_flat(context: dict) -> bool:
    """Whether ``apply``'s keyword arguments select the flat layout (``segment_ids=`` or
    ``n_node=`` given, :data:`~geonorm_jax.norms.base.LAYOUT_KEYS`)."""
    return context.get("segment_ids") is not None or context.get("n_node") is not None


def as_irreps(x, what: str = "x", *, flat: bool = False) -> tuple[e3nn.IrrepsArray, tuple | None]:
    """``(IrrepsArray, raw_shape)``: an IrrepsArray as given (``raw_shape = None``), or plain
    vectors as ``channels x 1o`` (``raw_shape`` their shape).

    Padded (``flat=False``, this library's layout): IrrepsArray ``[batch, nodes, irreps]`` or
    vectors ``[batch, nodes, channels, 3]``. Flat (``flat=True``, e3nn-jax's and jraph's):
    IrrepsArray ``[num_nodes, irreps]`` or vectors ``[num_nodes, channels, 3]``.

    Raises ``ValueError`` naming the expected layout and the received shape and dtype.
    """
    lead = 1 if flat else 2
    expected = _FLAT if flat else _PADDED
    if isinstance(x, e3nn.IrrepsArray):
        arr = x.array
        if arr.ndim != lead + 1 or not jnp.issubdtype(arr.dtype, jnp.floating):
            hint = _HINT if not flat and arr.ndim == 2 else ""
            raise ValueError(f"{what}: expected {expected} of a floating dtype; received "
                             f"IrrepsArray shape {arr.shape} with dtype {arr.dtype}{hint}")
        return x, None
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    if (getattr(x, "ndim", None) != lead + 2 or shape[-1] != 3
            or not jnp.issubdtype(dtype, jnp.floating)):
        hint = _HINT if not flat and getattr(x, "ndim", None) == 3 else ""
        raise ValueError(f"{what}: expected {expected} of a floating dtype; received shape "
                         f"{shape} with dtype {dtype}{hint}")
    c = x.shape[-2]
    arr = x.reshape(x.shape[:lead] + (3 * c,))
    return e3nn.IrrepsArray(e3nn.Irreps(f"{c}x1o"), arr), tuple(x.shape)


def _init_irreps(x, name: str, context: dict) -> e3nn.IrrepsArray:
    """The IrrepsArray of ``init``'s input, in the layout its keywords select."""
    return as_irreps(x, name, flat=is_flat(context))[0]


def _blocks(x: e3nn.IrrepsArray) -> list[jax.Array]:
    """The chunks ``[..., mul, 2l+1]`` as plain arrays (zeros included)."""
    out = []
    for mul_ir, sl in zip(x.irreps, x.irreps.slices(), strict=True):
        out.append(x.array[..., sl].reshape(x.array.shape[:-1] + (mul_ir.mul, mul_ir.ir.dim)))
    return out


def _assemble(x: e3nn.IrrepsArray, blocks: list[jax.Array], raw_shape, dtype):
    lead = x.array.shape[:-1]
    arr = jnp.concatenate([b.reshape(lead + (math.prod(b.shape[-2:]),)) for b in blocks],
                          axis=-1) if blocks else (
        x.array)
    arr = arr.astype(dtype)
    if raw_shape is not None:
        return arr.reshape(raw_shape)
    return e3nn.IrrepsArray(x.irreps, arr)


def _is_even_scalar(mul_ir) -> bool:
    return mul_ir.ir.l == 0 and mul_ir.ir.p == 1


def _num_scalars(irreps) -> int:
    return sum(mi.mul for mi in irreps if _is_even_scalar(mi))


def _param_slices(irreps):
    """Per chunk: (slice into [num_irreps], slice into [num 0e channels] or None)."""
    out, i, j = [], 0, 0
    for mi in irreps:
        s = slice(i, i + mi.mul)
        i += mi.mul
        if _is_even_scalar(mi):
            out.append((s, slice(j, j + mi.mul)))
            j += mi.mul
        else:
            out.append((s, None))
    return out


def _node_scale(blocks: list[jax.Array]) -> jax.Array:
    """``s = max(1, max |x|)`` per node ``[..., 1, 1]`` (no gradient; results do not depend on
    it in exact arithmetic)."""
    m = jnp.ones(blocks[0].shape[:-2], blocks[0].dtype)
    for b in blocks:
        if b.size:
            m = jnp.maximum(m, jnp.max(jnp.abs(b), axis=(-2, -1), initial=0.0))
    return jax.lax.stop_gradient(m)[..., None, None]


def _check_param_shapes(params: dict, shapes: dict, what: str, x) -> None:
    for key, shape in shapes.items():
        if key in params and tuple(jnp.shape(params[key])) != shape:
            raise ValueError(
                f"{what}: {key!r} has shape {tuple(jnp.shape(params[key]))} but the input "
                f"needs {shape} (received input shape {getattr(x, 'shape', None)}); re-initialize")


def _sq_stat(block: jax.Array, normalization: str) -> jax.Array:
    """``mean_m`` (component) or ``sum_m`` (norm) of ``block^2``: ``[..., mul]``."""
    sq = jnp.square(block)
    return jnp.mean(sq, axis=-1) if normalization == "component" else jnp.sum(sq, axis=-1)


def _prepare(x, name, mask=None, params=None, shapes=None, context=None):
    """Checks (the layout and the mask, :func:`graph_layout` on ``context``'s layout keywords;
    ``params`` against ``shapes(irreps)`` when given), then ``(xi, raw_shape, dtype, chunks,
    graphs)``: the chunks ``[..., mul, 2l+1]`` in the compute dtype with padded nodes set to 0
    (``jnp.where``: whatever padding holds, NaN included, reaches no output or gradient of a
    real node) and the :class:`Graphs` of the input."""
    context = context or {}
    xi, raw = as_irreps(x, name, flat=is_flat(context))
    graphs = graph_layout(xi.array, mask, **{k: context.get(k) for k in LAYOUT_KEYS},
                          what=name)
    if not graphs.flat and graphs.mask is not None:
        graphs = graphs._replace(mask=graphs.mask.astype(bool))
    if shapes is not None:
        _check_param_shapes(params, shapes(xi.irreps), name, x)
    dtype = xi.array.dtype
    cdt = jnp.promote_types(dtype, jnp.float32)
    blocks = [zero_padding(b.astype(cdt), graphs) for b in _blocks(xi)]
    return xi, raw, dtype, blocks, graphs


def _group_sum(a: jax.Array, graphs: Graphs, batch: bool) -> jax.Array:
    """Sum of ``a [..., mul, k]`` over the real nodes of each graph (``batch=False``: padded
    ``[batch, 1, mul, k]``, flat ``[num_nodes, mul, k]`` via :func:`graph_sum`) or of the
    whole batch (``batch=True``: ``[1, 1, mul, k]`` / ``[1, mul, k]``)."""
    if not batch:
        return graph_sum(a, graphs)
    nodes = tuple(range(a.ndim - 2))
    return jnp.sum(zero_padding(a, graphs), axis=nodes, keepdims=True)


def _group_max_abs(a: jax.Array, graphs: Graphs, batch: bool) -> jax.Array:
    """``max |a|`` over the real nodes and the ``m`` axis of each graph or of the whole batch
    (as :func:`_group_sum`; the last axis kept as 1); 0 for a group without a real node."""
    if not batch:
        return graph_max_abs(a, graphs, (-1,))
    axes = tuple(range(a.ndim - 2)) + (a.ndim - 1,)
    return jnp.max(jnp.abs(zero_padding(a, graphs)), axis=axes, keepdims=True, initial=0.0)


def _affine_init(irreps, dtype, affine: bool, bias: bool = True) -> dict:
    if not affine:
        return {}
    p = {"scale": jnp.ones((irreps.num_irreps,), dtype)}
    if bias:
        p["bias"] = jnp.zeros((_num_scalars(irreps),), dtype)
    return p


def _scale_and_eps(blocks: list[jax.Array], epsilon: float):
    """:func:`_node_scale` ``s [..., 1, 1]`` and ``epsilon / s^2`` ``[..., 1]``: the epsilon
    of a mean square of ``x / s``, so that ``ms(x/s) + eps/s^2 = (ms(x) + eps) / s^2``."""
    s = _node_scale(blocks)
    return s, epsilon / jnp.square(s[..., 0, 0])[..., None]


def _affine_shapes(irreps) -> dict:
    return {"scale": (irreps.num_irreps,), "bias": (_num_scalars(irreps),)}


def _per_channel(params: dict, key: str, sl: slice, like: jax.Array) -> jax.Array:
    """``params[key][sl]`` in ``like``'s dtype, shaped ``[mul, 1]`` to broadcast on a chunk
    ``[..., mul, 2l+1]``."""
    return params[key][sl].astype(like.dtype)[:, None]
