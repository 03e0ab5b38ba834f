"""The irreps plumbing the irreps-feature norms share: layout checks, chunks, scaled statistics.

Layout (e3nn-jax conventions). The input is an ``e3nn.IrrepsArray`` ``[batch, nodes, irreps]``
whose irreps are chunks ``mul x (l, p)``; chunk ``k`` is ``[batch, nodes, mul_k, 2l_k + 1]``
(e3nn-jax's mul-major order), its ``mul_k`` copies are the *channels* (``v``) and its
``2l + 1`` components the ``m`` axis (``d``). A plain array ``[batch, nodes, channels, 3]`` is
accepted too and read as ``channels x 1o`` (:func:`as_irreps`; the output is again ``[batch,
nodes, channels, 3]``). Per-irrep parameters have one entry per channel of every chunk
(``irreps.num_irreps``, chunk order); "scalars" that are centred or get a bias are the even
``0e`` chunks only (``_is_even_scalar``, e3nn's ``ir.is_scalar()``).

Helpers (private to the irreps family, used by :mod:`~geonorm_jax.norms.irreps_layer`,
:mod:`~geonorm_jax.norms.irreps_batch` and :mod:`~geonorm_jax.norms.irreps_gate`):
``_prepare`` (checks, then the chunks ``[B, N, mul, 2l+1]`` in the compute dtype with padded
nodes set to 0), ``_assemble`` (back to the input's layout and dtype), ``_param_slices``,
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

from geonorm_jax.norms.base import check_mask

__all__ = ["as_irreps"]

_LAYOUT = "an IrrepsArray [batch, nodes, irreps] or vectors [batch, nodes, channels, 3]"


# --------------------------------------------------------------------------------------------
# Plumbing: layout checks, chunks, scaled statistics
# --------------------------------------------------------------------------------------------


def as_irreps(x, what: str = "x") -> tuple[e3nn.IrrepsArray, tuple | None]:
    """``(IrrepsArray, raw_shape)``: an IrrepsArray as given (``raw_shape = None``), or plain
    vectors ``[batch, nodes, channels, 3]`` as ``channels x 1o`` (``raw_shape`` their shape).

    Raises ``ValueError`` naming the expected layout and the received shape and dtype.
    """
    if isinstance(x, e3nn.IrrepsArray):
        arr = x.array
        if arr.ndim != 3 or not jnp.issubdtype(arr.dtype, jnp.floating):
            raise ValueError(f"{what}: expected {_LAYOUT} of a floating dtype; received "
                             f"IrrepsArray shape {arr.shape} with dtype {arr.dtype}")
        return x, None
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", type(x).__name__)
    if (getattr(x, "ndim", None) != 4 or shape[-1] != 3
            or not jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"{what}: expected {_LAYOUT} of a floating dtype; received shape "
                         f"{shape} with dtype {dtype}")
    b, n, c, _ = x.shape
    return e3nn.IrrepsArray(e3nn.Irreps(f"{c}x1o"), x.reshape(b, n, 3 * c)), tuple(x.shape)


def _blocks(x: e3nn.IrrepsArray) -> list[jax.Array]:
    """The chunks ``[batch, nodes, mul, 2l+1]`` as plain arrays (zeros included)."""
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
    """``s = max(1, max |x|)`` per node ``[batch, nodes, 1, 1]`` (no gradient; results do not
    depend on it in exact arithmetic)."""
    m = jnp.ones(blocks[0].shape[:2], blocks[0].dtype)
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
    """``mean_m`` (component) or ``sum_m`` (norm) of ``block^2``: ``[batch, nodes, mul]``."""
    sq = jnp.square(block)
    return jnp.mean(sq, axis=-1) if normalization == "component" else jnp.sum(sq, axis=-1)


def _prepare(x, name, mask=None, params=None, shapes=None):
    """Checks (the mask; ``params`` against ``shapes(irreps)`` when given), then the chunks in
    the compute dtype with padded nodes set to 0 (``jnp.where``: whatever padding holds, NaN
    included, reaches no output or gradient of a real node)."""
    xi, raw = as_irreps(x, name)
    check_mask(mask, xi.shape)
    if shapes is not None:
        _check_param_shapes(params, shapes(xi.irreps), name, x)
    dtype = xi.array.dtype
    cdt = jnp.promote_types(dtype, jnp.float32)
    blocks = [b.astype(cdt) for b in _blocks(xi)]
    if mask is not None:
        m = mask.astype(bool)[:, :, None, None]
        blocks = [jnp.where(m, b, 0.0) for b in blocks]
    return xi, raw, dtype, blocks


def _affine_init(irreps, dtype, affine: bool, bias: bool = True) -> dict:
    if not affine:
        return {}
    p = {"scale": jnp.ones((irreps.num_irreps,), dtype)}
    if bias:
        p["bias"] = jnp.zeros((_num_scalars(irreps),), dtype)
    return p


def _scale_and_eps(blocks: list[jax.Array], epsilon: float):
    """:func:`_node_scale` ``s [B, N, 1, 1]`` and ``epsilon / s^2`` ``[B, N, 1]``: the epsilon
    of a mean square of ``x / s``, so that ``ms(x/s) + eps/s^2 = (ms(x) + eps) / s^2``."""
    s = _node_scale(blocks)
    return s, epsilon / jnp.square(s[..., 0, 0])[..., None]


def _affine_shapes(irreps) -> dict:
    return {"scale": (irreps.num_irreps,), "bias": (_num_scalars(irreps),)}



def _per_channel(params: dict, key: str, sl: slice, like: jax.Array) -> jax.Array:
    """``params[key][sl]`` in ``like``'s dtype, shaped ``[mul, 1]`` to broadcast on a chunk
    ``[batch, nodes, mul, 2l+1]``."""
    return params[key][sl].astype(like.dtype)[:, None]
