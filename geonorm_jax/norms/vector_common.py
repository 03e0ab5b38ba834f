"""The plumbing shared by the vector layers of :mod:`geonorm_jax.norms.vector`: input checks,
channel counts, the node layout, and the split of an ``e3nn.IrrepsArray`` into ``[..., mul,
2l+1]`` blocks on which each layer's block function runs (raw vectors are one block).

Two node layouts, chosen by ``apply``'s keywords (:func:`geonorm_jax.norms.base.graph_layout`,
the machinery of the graph layers): padded, this library's, ``[batch, nodes, irreps]`` /
``[batch, nodes, channels, 3]`` with ``mask [batch, nodes]``; flat, e3nn-jax's and jraph's,
``[num_nodes, irreps]`` / ``[num_nodes, channels, 3]`` with ``segment_ids`` + ``num_graphs`` or
``n_node`` (and an optional ``mask [num_nodes]``). Block functions get the
:class:`~geonorm_jax.norms.base.Graphs` of the input and reduce with its helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import (
    LAYOUT_KEYS,
    Norm,
    check_vectors,
    graph_layout,
    layout_error,
    zero_padding,
)

__all__ = ["BlockFn"]

# A block is [batch, nodes, channels, dim] (padded) or [num_nodes, channels, dim] (flat); dim = 3
# for raw vectors, 2l+1 for an irrep chunk. block(params, state, v, graphs, training).
BlockFn = Callable[..., tuple[jax.Array, dict]]


# --------------------------------------------------------------------------------------------
# Plumbing shared by the three layers: checks, channel counts, the IrrepsArray split
# --------------------------------------------------------------------------------------------


_HINT = " (a flat [num_nodes, irreps] input needs segment_ids= and num_graphs=, or n_node=)"


def _is_flat(context: dict) -> bool:
    return context.get("segment_ids") is not None or context.get("n_node") is not None


def _check_input(x, what: str, flat: bool = False) -> None:
    if isinstance(x, e3nn.IrrepsArray):
        arr = x.array
        lead = ("[num_nodes, irreps] (the flat layout, selected by segment_ids= or n_node=)"
                if flat else "[batch, nodes, irreps]")
        if arr.ndim != (2 if flat else 3) or not jnp.issubdtype(arr.dtype, jnp.floating):
            hint = _HINT if not flat and arr.ndim == 2 else ""
            raise ValueError(
                f"{what}: expected an IrrepsArray {lead} of a floating dtype; "
                f"received IrrepsArray shape {arr.shape} with dtype {arr.dtype}{hint}"
            )
        return
    if not flat:
        check_vectors(x, what)
        return
    expected = "flat vector features [num_nodes, channels, 3] of a floating dtype"
    if (getattr(x, "ndim", None) != 3 or x.shape[-1] != 3
            or not jnp.issubdtype(x.dtype, jnp.floating)):
        raise layout_error(what, expected, x)


def _num_channels(x) -> int:
    return x.irreps.num_irreps if isinstance(x, e3nn.IrrepsArray) else x.shape[-2]


def _dtype(x):
    return x.array.dtype if isinstance(x, e3nn.IrrepsArray) else x.dtype


def _check_channels(tree: dict, num: int, what: str, x) -> None:
    for key, value in tree.items():
        if jnp.shape(value) != (num,):
            raise ValueError(
                f"{what}: {key!r} has shape {jnp.shape(value)} but the input has {num} "
                f"channels (received shape {getattr(x, 'shape', None)}); re-initialize"
            )


def _slice_tree(tree: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in tree.items()}


def _run(block_fn: BlockFn, scalars: str, params, state, x, graphs, training):
    """Apply ``block_fn`` to raw vectors, or to every chunk of an IrrepsArray.

    Padded nodes are first set to 0 by selection, so NaN or inf there reach neither a
    statistic nor a gradient."""
    if not isinstance(x, e3nn.IrrepsArray):
        return block_fn(params, state, zero_padding(x, graphs), graphs, training)
    x = e3nn.IrrepsArray(x.irreps, zero_padding(x.array, graphs), zero_flags=x.zero_flags)
    chunks, new_parts = [], {k: [] for k in state}
    start = 0
    for mul_ir, chunk in zip(x.irreps, x.chunks, strict=True):
        stop = start + mul_ir.mul
        p, s = _slice_tree(params, start, stop), _slice_tree(state, start, stop)
        if chunk is None or (mul_ir.ir.l == 0 and scalars == "identity") or mul_ir.mul == 0:
            chunks.append(chunk)  # all-zero chunk or passed-through scalars
            new_s = s
        else:
            y, new_s = block_fn(p, s, chunk, graphs, training)  # chunk: [..., mul, 2l+1]
            chunks.append(y)
        for k in new_parts:
            new_parts[k].append(new_s[k])
        start = stop
    new_state = {k: jnp.concatenate(v) if v else state[k] for k, v in new_parts.items()}
    y = e3nn.from_chunks(x.irreps, chunks, x.shape[:-1], x.array.dtype)
    return y, new_state


def _vector_layer(name: str, block: BlockFn, scalars: str, params_of, state_of=None) -> Norm:
    """The ``Norm`` of a block function: ``init`` checks the input and returns
    ``(params_of(C, dtype), state_of(C, dtype) or {})`` with ``C`` the channels (``[C]``
    parameters); ``apply`` checks the input, its layout (:func:`graph_layout` on the layout
    keywords), the mask and the parameter (and state) sizes, then runs ``block`` on the
    vectors or on every irreps chunk (:func:`_run`)."""

    def init(key, x, **context):
        del key
        _check_input(x, name, _is_flat(context))
        c, dt = _num_channels(x), _dtype(x)
        return params_of(c, dt), ({} if state_of is None else state_of(c, dt))

    def apply(params, state, x, *, mask=None, training=False, **context):
        _check_input(x, name, _is_flat(context))
        arr = x.array if isinstance(x, e3nn.IrrepsArray) else x
        graphs = graph_layout(arr, mask, **{k: context.get(k) for k in LAYOUT_KEYS}, what=name)
        if not graphs.flat and graphs.mask is not None:
            graphs = graphs._replace(mask=graphs.mask.astype(bool))
        _check_channels(params, _num_channels(x), name, x)
        if state_of is not None:
            _check_channels(state, _num_channels(x), name, x)
        return _run(block, scalars, params, state, x, graphs, training)

    return Norm(init, apply, kind="vectors", name=name)


def _scale(a: jax.Array, axes: tuple[int, ...], epsilon: float) -> jax.Array:
    """Power of two to divide ``a`` (zero at padded nodes) by before squaring it in a
    statistic over ``axes`` (keepdims): 1 at ordinary magnitudes
    (:func:`geonorm_jax.geometry.magnitude_scale`, floored at ``sqrt(epsilon)``)."""
    return geometry.magnitude_scale(jnp.max(jnp.abs(a), axis=axes, keepdims=True, initial=0.0),
                                    epsilon**0.5)


def _along(v: jax.Array, ns: jax.Array, s: jax.Array, factor: jax.Array, floor) -> jax.Array:
    """``v * factor / (n + floor)`` for ``v [..., dim]``, ``n = ||v||``, ``factor [...]``,
    given ``ns = n / s`` with ``s`` a power of two (1 at ordinary magnitudes, broadcast like
    ``n``): computed as ``(v / s) * factor / (ns + floor / s)``, the same value, but the
    derivative of ``1 / (n + floor)`` is not lost to float32 underflow at ``n = 1e30``."""
    floor = jnp.broadcast_to(floor, ns.shape)  # (summed over nodes at once in the gradient)
    return (v / s[..., None]) * (factor / (ns + floor / s))[..., None]


def _check_scalars(scalars: str) -> None:
    if scalars not in ("same", "identity"):
        raise ValueError(f"scalars: expected 'same' or 'identity'; received {scalars!r}")
