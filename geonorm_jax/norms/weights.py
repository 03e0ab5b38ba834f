"""Weight normalizations: reparametrisations of a layer's kernel (the survey's Table 1, ``W`` rows).

Here ``x`` is not an activation but a Dense kernel ``w [fan_in, fan_out]`` (``y = a @ w``);
a kernel of higher rank ``[..., fan_in, fan_out]`` (a convolution) is treated as the
matrix ``[prod(...) * fan_in, fan_out]``. ``apply`` returns the reparametrised kernel of
the same shape and dtype, which the layer then uses in place of ``w``. Statistics are per
output unit (column) over the fan-in (all axes but the last). ``mask`` is ignored: the
kernel has no nodes. :class:`geonorm_jax.linen.NormalizedDense` wires these into a layer.

Numerics: the squares of the norms and variances are taken of the kernel divided by a power
of two when its magnitude is outside ``2**-50 .. 2**50`` (bit-for-bit unchanged otherwise),
so the layers are right in float32 from 1e-30 to 1e30 (``spectral_norm`` included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from geonorm_jax.geometry import magnitude_scale
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_hyperparameters,
    check_param_sizes,
    check_weights,
    stat_dtype,
)

__all__ = [
    "weight_norm",
    "spectral_norm",
    "scaled_weight_standardization",
    "CATALOG_ENTRIES",
]


def _fan_in_axes(w: jax.Array) -> tuple[int, ...]:
    return tuple(range(w.ndim - 1))


def _column_scale(w: jax.Array, epsilon: float = 0.0) -> jax.Array:
    """Per-column power of two ``[fan_out]`` to divide a kernel by before squaring it
    (:func:`geonorm_jax.geometry.magnitude_scale` of the column's largest ``|w|``, floored
    at ``sqrt(epsilon)``): 1 at ordinary magnitudes, so results there are unchanged."""
    return magnitude_scale(jnp.max(jnp.abs(w), axis=_fan_in_axes(w)), epsilon**0.5)


def _check_fan_out(tree: dict, w: jax.Array, name: str, keys: tuple[str, ...]) -> None:
    """Per-output-unit entries of ``tree`` must match the kernel's ``fan_out``."""
    check_param_sizes(
        tree, w, name, keys,
        unit="output units", holder="the kernel has", layout="a kernel [fan_in, {n}]",
    )


# ----------------------------------------------------------------------------- WeightNorm


@check_hyperparameters
def weight_norm(*, epsilon: float = 1e-12, use_scale: bool = True) -> Norm:
    r"""Weight normalization (Salimans & Kingma, NeurIPS 2016).

    .. math::
        w_{:,j} = g_j \frac{v_{:,j}}{\sqrt{\lVert v_{:,j} \rVert_2^2 + \epsilon}}

    The survey writes ``g W / ||W||_2``. The norm runs over the fan-in, one ``g`` per
    output unit: ``v [fan_in, fan_out]`` is the kernel passed as ``x``, ``g [fan_out]`` is
    ``params["scale"]``. ``g`` is initialised to ``||v||`` of the kernel given to ``init``,
    so the initial weight equals the unnormalized one (as ``torch.nn.utils.weight_norm``;
    Flax's ``WeightNorm`` initialises the scale to 1 instead). Epsilon sits inside the
    square root, so the value and gradient are finite at ``v = 0``. No state.

    Args:
      epsilon: added to the squared norm inside the square root.
      use_scale: learn ``g``; without it every column has unit norm.
    """

    def _scaled(w):
        """``(w / s, ||w / s||^2 + eps / s^2)`` per column, ``s [fan_out]`` a power of two
        (1 at ordinary magnitudes) so that squares of 1e30 do not overflow float32."""
        ws = w.astype(stat_dtype(w.dtype))
        s = _column_scale(ws, epsilon)
        ws = ws / s
        return ws, jnp.sum(jnp.square(ws), axis=_fan_in_axes(w)) + epsilon / jnp.square(s), s

    def init(key, x, **context):
        del key, context
        check_weights(x)
        if not use_scale:
            return {}, {}
        _, sq, s = _scaled(x)
        return {"scale": (s * jnp.sqrt(sq)).astype(x.dtype)}, {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del mask, training, context
        check_weights(x)
        _check_fan_out(params, x, "weight_norm", ("scale",))
        ws, sq, _ = _scaled(x)
        w = ws * jax.lax.rsqrt(sq)
        if use_scale:
            w = w * params["scale"]
        return w.astype(x.dtype), state

    return Norm(init, apply, kind="weights", name="weight_norm")


# ----------------------------------------------------------------------------- SpectralNorm


@check_hyperparameters
def spectral_norm(*, n_steps: int = 1, epsilon: float = 1e-12) -> Norm:
    r"""Spectral normalization (Miyato, Kataoka, Koyama & Yoshida, ICLR 2018).

    .. math::
        \bar W = W / \sigma(W), \qquad \sigma(W) = \max_{h \neq 0} \lVert W h \rVert_2 /
        \lVert h \rVert_2

    The survey's row reads ``max_h ||Wh||/||h|| * W`` (extraction garbled the division);
    the paper divides by the largest singular value. ``sigma`` is estimated by power
    iteration on the matrix ``W [fan_in, fan_out]``, starting from the stored right
    singular vector estimate ``u [fan_out]`` (``state["u"]``, standard normal from the init
    key, as Flax):

    .. math::
        \hat u = u/\lVert u \rVert,\quad
        \text{repeat } n\_steps:\ v = \frac{W\hat u}{\lVert W\hat u\rVert},\
        \hat u = \frac{W^\top v}{\lVert W^\top v\rVert};\qquad
        \sigma = v^\top W \hat u,\ v = W\hat u / \lVert W\hat u \rVert

    ``u`` and ``v`` are treated as constants for the gradient (``stop_gradient``), so
    ``d sigma / d W = v u^T`` as in the paper. With ``training=True`` the new ``u`` and
    ``sigma`` are returned in the state; with ``training=False`` the same iterations run
    from the stored ``u`` but the state is returned unchanged (deterministic evaluation,
    as Flax's ``update_stats=False``). A zero kernel has ``sigma = 0`` and is returned
    unchanged. ``epsilon`` is added inside the square root of every vector norm.
    State: ``u [fan_out]``, ``sigma []``. No params.

    Args:
      n_steps: power iterations per call (>= 0; 0 uses the stored ``u`` as it is).
      epsilon: added inside the square roots of the power-iteration normalizations.
    """
    if n_steps < 0:
        raise ValueError(f"spectral_norm: n_steps must be >= 0; received {n_steps}")

    def _normalize(a):
        return a * jax.lax.rsqrt(jnp.sum(jnp.square(a)) + epsilon)

    def init(key, x, **context):
        del context
        check_weights(x)
        dtype = stat_dtype(x.dtype)
        u = jax.random.normal(key, (x.shape[-1],), dtype)
        return {}, {"u": u, "sigma": jnp.ones((), dtype)}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del params, mask, context
        check_weights(x)
        _check_fan_out(state, x, "spectral_norm", ("u",))
        w = x.astype(stat_dtype(x.dtype))
        # divide by a power of two (1 at ordinary magnitudes) so the power iteration's
        # squares neither overflow (1e30) nor fall below its epsilon (1e-30) in float32
        s = magnitude_scale(jnp.max(jnp.abs(w)))
        w = w / s
        w2 = w.reshape(-1, w.shape[-1])  # [fan_in, fan_out]
        wsg = jax.lax.stop_gradient(w2)
        u = _normalize(state["u"].astype(w.dtype))
        for _ in range(n_steps):
            v = _normalize(wsg @ u)
            u = _normalize(wsg.T @ v)
        u = jax.lax.stop_gradient(u)
        v = jax.lax.stop_gradient(_normalize(wsg @ u))
        sigma = v @ w2 @ u
        w_bar = w / jnp.where(sigma > 0, sigma, 1.0)
        if training:
            state = {
                "u": u.astype(state["u"].dtype),
                "sigma": jax.lax.stop_gradient(sigma * s).astype(state["sigma"].dtype),
            }
        return w_bar.astype(x.dtype), state

    return Norm(init, apply, kind="weights", name="spectral_norm")


# ----------------------------------------------------------------------------- Scaled WS


@check_hyperparameters
def scaled_weight_standardization(
    *, epsilon: float = 1e-4, use_scale: bool = True, gain: float = 1.0
) -> Norm:
    r"""Scaled weight standardization (Brock, De & Smith, ICLR 2021; NF-ResNets).

    .. math::
        \hat W_{:,j} = \gamma\, g_j \frac{W_{:,j} - \mu_j}{\sqrt{N \sigma_j^2 + \epsilon}}

    with ``mu_j``, ``sigma_j^2`` the mean and (biased) variance of column ``j`` over the
    fan-in and ``N = fan_in`` (all axes but the last). ``gamma`` is the paper's fixed,
    nonlinearity-specific gain (``gain``, e.g. ``sqrt(2/(1-1/pi))`` for ReLU) and ``g
    [fan_out]`` the learnable affine gain (``params["scale"]``, init 1).

    The survey writes ``g (W - mu_{x,v}) / sigma_{x,v}``: the same standardization without
    the ``1/sqrt(N)`` factor that makes ``a @ W_hat`` variance-preserving; we follow the
    paper. The paper's reference code uses ``max(N sigma^2, eps)``; we add ``epsilon``
    inside the square root (the library's convention), which differs only for nearly
    constant columns. No state.
    """

    def init(key, x, **context):
        del key, context
        check_weights(x)
        return ({"scale": jnp.ones((x.shape[-1],), x.dtype)} if use_scale else {}), {}

    def apply(params, state, x, *, mask=None, training=False, **context):
        del mask, training, context
        check_weights(x)
        _check_fan_out(params, x, "scaled_weight_standardization", ("scale",))
        w = x.astype(stat_dtype(x.dtype))
        axes = _fan_in_axes(w)
        fan_in = 1
        for a in axes:
            fan_in *= w.shape[a]
        s = _column_scale(w, epsilon)  # [fan_out], 1 at ordinary magnitudes
        w = w / s
        mean = jnp.mean(w, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(w - mean), axis=axes, keepdims=True)
        w_hat = gain * (w - mean) * jax.lax.rsqrt(fan_in * var + epsilon / jnp.square(s))
        if use_scale:
            w_hat = w_hat * params["scale"]
        return w_hat.astype(x.dtype), state

    return Norm(init, apply, kind="weights", name="scaled_weight_standardization")


# ----------------------------------------------------------------------------- catalogue

_FAMILY = "language/vision"

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="weight_norm",
        constructor=weight_norm,
        kind="weights",
        paper="Salimans & Kingma, Weight Normalization, NeurIPS 2016",
        formula="g W / ||W||_2",
        reduced_axes="fan_in (per output unit)",
        params=("scale",),
        family=_FAMILY,
        survey_row="WeightNorm [17]",
        notes="g initialised to ||v|| so the initial kernel is unchanged.",
        symmetries=(),
    ),
    NormInfo(
        name="spectral_norm",
        constructor=spectral_norm,
        kind="weights",
        paper="Miyato, Kataoka, Koyama & Yoshida, Spectral Normalization for GANs, ICLR 2018",
        formula="W / max_{h != 0} ||Wh||_2 / ||h||_2",
        reduced_axes="fan_in, fan_out (largest singular value)",
        running_state=("u", "sigma"),
        family=_FAMILY,
        survey_row="SpectralNorm [19]",
        notes="The survey's text reads 'max ... * W' (garbled); the paper divides by sigma. "
        "Power iteration vector u is state, updated only when training.",
        symmetries=(),
    ),
    NormInfo(
        name="scaled_weight_standardization",
        constructor=scaled_weight_standardization,
        kind="weights",
        paper="Brock, De & Smith, Characterizing signal propagation to close the performance "
        "gap in unnormalized ResNets, ICLR 2021",
        formula="g (W - mu_{x,v}) / sigma_{x,v}",
        reduced_axes="fan_in (per output unit)",
        params=("scale",),
        family=_FAMILY,
        survey_row="Scaled Weight [20]",
        notes="Follows the paper: extra 1/sqrt(fan_in) and a fixed gain, which the survey's "
        "formula omits.",
        symmetries=(),
    ),
]
