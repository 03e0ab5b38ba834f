"""The plumbing shared by the vector layers of :mod:`geonorm_jax.norms.vector`: input checks,
channel counts, and the split of an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]`` into
``[batch, nodes, mul, 2l+1]`` blocks on which each layer's block function runs (raw vectors
``[batch, nodes, channels, 3]`` are one block).
"""

from __future__ import annotations

from collections.abc import Callable

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import (
    Norm,
    check_mask,
    check_vectors,
    zero_padding,
)

__all__ = ["BlockFn"]

# A block is [batch, nodes, channels, dim]; dim = 3 for raw vectors, 2l+1 for an irrep chunk.
BlockFn = Callable[..., tuple[jax.Array, dict]]


# --------------------------------------------------------------------------------------------
# Plumbing shared by the three layers: checks, channel counts, the IrrepsArray split
# --------------------------------------------------------------------------------------------


def _check_input(x, what: str) -> None:
    if isinstance(x, e3nn.IrrepsArray):
        arr = x.array
        if arr.ndim != 3 or not jnp.issubdtype(arr.dtype, jnp.floating):
            raise ValueError(
                f"{what}: expected an IrrepsArray [batch, nodes, irreps] of a floating dtype; "
                f"received shape {arr.shape} with dtype {arr.dtype}"
            )
        return
    check_vectors(x, what)


def _num_channels(x) -> int:
    return x.irreps.num_irreps if isinstance(x, e3nn.IrrepsArray) else x.shape[2]


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


def _run(block_fn: BlockFn, scalars: str, params, state, x, mask, training):
    """Apply ``block_fn`` to raw vectors, or to every chunk of an IrrepsArray.

    Padded nodes are first set to 0 by selection, so NaN or inf there reach neither a
    statistic nor a gradient."""
    if not isinstance(x, e3nn.IrrepsArray):
        return block_fn(params, state, zero_padding(x, mask), mask, training)
    if mask is not None:
        x = e3nn.IrrepsArray(x.irreps, zero_padding(x.array, mask), zero_flags=x.zero_flags)
    chunks, new_parts = [], {k: [] for k in state}
    start = 0
    for mul_ir, chunk in zip(x.irreps, x.chunks, strict=True):
        stop = start + mul_ir.mul
        p, s = _slice_tree(params, start, stop), _slice_tree(state, start, stop)
        if chunk is None or (mul_ir.ir.l == 0 and scalars == "identity") or mul_ir.mul == 0:
            chunks.append(chunk)  # all-zero chunk or passed-through scalars
            new_s = s
        else:
            y, new_s = block_fn(p, s, chunk, mask, training)  # chunk: [B, N, mul, 2l+1]
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
    parameters); ``apply`` checks the input, the mask and the parameter (and state) sizes,
    then runs ``block`` on the vectors or on every irreps chunk (:func:`_run`)."""

    def init(key, x, **context):
        del key, context
        _check_input(x, name)
        c, dt = _num_channels(x), _dtype(x)
        return params_of(c, dt), ({} if state_of is None else state_of(c, dt))

    def apply(params, state, x, *, mask=None, training=False, **context):
        del context
        _check_input(x, name)
        check_mask(mask, x.shape)
        _check_channels(params, _num_channels(x), name, x)
        if state_of is not None:
            _check_channels(state, _num_channels(x), name, x)
        return _run(block, scalars, params, state, x, mask, training)

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
