"""Rotation-equivariant normalization of vector (and higher-order) node features.

The survey's Table 1 rows for geometric data, acting on ``kind="vectors"``:

* :func:`rms_vector_norm`: Quaternion [Shen et al. 2020] and Vector Perceptron / GVP
  [Jing et al. 2021] / EGAN [Le et al. 2022]: ``A / RMS``.
* :func:`vector_neuron_batch_norm`: Vector Neurons [Deng et al. 2021]: BatchNorm of the
  vector norms, applied along each vector's direction.
* :func:`ev_norm`: EvNorm of UNiTE [Qiao et al. 2021]: standardized norms times
  ``v / (||v|| + beta)``.

Layouts. Raw vectors ``[batch, nodes, channels, 3]``, or an ``e3nn.IrrepsArray``
``[batch, nodes, irreps]`` of any ``l`` and parity. For an IrrepsArray each ``mul x ir`` chunk
``[batch, nodes, mul, 2l+1]`` is normalized separately, its ``mul`` copies playing the role of
channels and its ``2l+1`` components the role of ``d``; the output has the same irreps.
Scalars (``l = 0``) are by default treated like any other irrep (their "norm" is ``|s|``,
which is invariant for ``0e`` and ``0o`` alike); ``scalars="identity"`` passes them through.
Per-channel parameters have one entry per channel (``C``, or ``irreps.num_irreps`` for an
IrrepsArray, in chunk order).

All three layers use only invariant statistics (norms), so they commute with every
orthogonal matrix (rotations and reflections). They do not touch translations: vector
features are differences or velocities, not positions.

The three layers stay in one module (a little over 400 lines) because they are one thing:
each is a block function on ``[batch, nodes, channels, dim]`` plugged into the same
IrrepsArray plumbing (input checks, channel counts, the per-chunk split of :func:`_run`),
and that plumbing is what gives them their layouts.

Numerics and padding: squared statistics divide their inputs by a power of two first when
their magnitude is outside ``2**-50 .. 2**50`` (:func:`geonorm_jax.geometry.magnitude_scale`;
bit-for-bit unchanged otherwise), so every layer is right in float32 from 1e-30 to 1e30;
padded nodes are excluded by selection, so NaN or inf there reaches neither a real output
nor a gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_hyperparameters,
    check_mask,
    check_vectors,
    masked_count,
    masked_sum,
    zero_padding,
)

__all__ = [
    "rms_vector_norm",
    "vector_neuron_batch_norm",
    "ev_norm",
    "CATALOG_ENTRIES",
]

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


# --------------------------------------------------------------------------------------------
# RMS vector norm: Quaternion / GVP / EGAN
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def rms_vector_norm(
    *,
    reduce: str = "channels",
    epsilon: float = 1e-8,
    use_scale: bool = False,
    scalars: str = "same",
    name: str = "rms_vector_norm",
) -> Norm:
    """Divide vector features by their root-mean-square norm (GVP / Quaternion / EGAN).

    .. math::

        y_{x c} = \\gamma_c \\frac{V_{x c}}{\\sqrt{\\operatorname{mean}_{c'} \\|V_{x c'}\\|_2^2
        + \\epsilon}} \\quad (\\texttt{reduce="channels"})

    with the mean also over the real nodes of each graph for ``reduce="nodes_channels"``.

    Papers: Jing et al. 2021, *Learning from protein structure with geometric vector
    perceptrons* (GVP): "the vector features are scaled by the root-mean-square norm", per
    node over the vector channels (the reference ``gvp-pytorch`` LayerNorm does
    ``V / sqrt(mean_c max(||V_c||^2, 1e-8))``, and LayerNorms the scalars separately, which
    here is a separate feature norm). Le et al. 2022 (EGAN) use the same layer. Shen et al.
    2020, *3D-rotation-equivariant quaternion neural networks*: the same form, which the
    survey notes is identical.

    Survey (Table 1): ``A / RMS_{x,v}`` for both rows, i.e. statistics over nodes *and*
    channels. The GVP code reduces over channels only (``{v, d}``); that is the default
    here, and ``reduce="nodes_channels"`` gives the survey's subscripts (``{x, v, d}``, real
    nodes only). We could not verify from the Quaternion paper's text which axes its
    normalization reduces; the catalogue entry ``quaternion_rms_norm`` follows the survey's
    ``{x, v}``, ``gvp_vector_layer_norm`` follows the GVP code.

    Args:
      reduce: ``"channels"`` (per node; GVP) or ``"nodes_channels"`` (per graph; survey).
      epsilon: added to the mean squared norm under the square root (GVP instead clamps
        each ``||V_c||^2`` from below at 1e-8). Zero vectors map to zero, with finite
        gradients.
      use_scale: learn a per-channel scale ``scale`` ``[C]`` (ones at init). GVP has none.
      scalars: for an IrrepsArray, ``"same"`` (treat ``l = 0`` like the other irreps) or
        ``"identity"`` (pass them through).
      name: the catalogue name carried by the returned ``Norm``.

    Shapes: ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``, same
    shape and dtype out. No running state, no context.
    """
    if reduce not in ("channels", "nodes_channels"):
        raise ValueError(f"reduce: expected 'channels' or 'nodes_channels'; received {reduce!r}")
    _check_scalars(scalars)

    def block(params, state, v, mask, training):
        del training
        axes = (2, 3) if reduce == "channels" else (1, 2, 3)
        s = _scale(v, axes, epsilon)[..., 0]  # [B, N, 1] or [B, 1, 1]; 1 normally
        sq = jnp.sum(jnp.square(v / s[..., None]), axis=-1)  # [B, N, C] squared norms
        if reduce == "channels":
            ms = jnp.mean(sq, axis=-1, keepdims=True)  # [B, N, 1]
        else:
            ms = masked_sum(sq, mask, (1, 2)) / masked_count(sq, mask, (1, 2))  # [B, 1, 1]
        y = v / s[..., None] * jax.lax.rsqrt(ms + epsilon / jnp.square(s))[..., None]
        if use_scale:
            y = y * params["scale"].astype(v.dtype)[:, None]
        return y.astype(v.dtype), state

    def params_of(c, dt):
        return {"scale": jnp.ones((c,), dt)} if use_scale else {}

    return _vector_layer(name, block, scalars, params_of)


# --------------------------------------------------------------------------------------------
# Vector Neuron BatchNorm
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def vector_neuron_batch_norm(
    *,
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    norm_epsilon: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
    axis_name: str | None = None,
    scalars: str = "same",
) -> Norm:
    """Vector Neuron BatchNorm (Deng et al. 2021, *Vector Neurons*, Sec. 3.4).

    .. math::

        n_{bxc} = \\|V_{bxc}\\|_2, \\qquad
        \\hat n_{bxc} = \\gamma_c \\frac{n_{bxc} - \\mu_c}{\\sqrt{\\sigma_c^2 + \\epsilon}}
        + \\beta_c, \\qquad
        y_{bxc} = V_{bxc} \\frac{\\hat n_{bxc}}{n_{bxc} + \\epsilon_n}

    ``mu_c``, ``sigma_c^2``: mean and biased variance of the norms of channel ``c`` over the
    batch and the real nodes (``{b, x}``), as BatchNorm does; with ``training=False`` the
    running averages are used instead. The survey (Table 1) writes it as
    ``(A^pos / ||A^pos||_2, BN(A^inv))``: the direction of each vector times the
    batch-normalized norm, which is this layer. As in the authors' code
    (``x / (||x|| + EPS) * BN(||x||)``, EPS = 1e-6), the direction is
    ``V / (||V|| + norm_epsilon)``, so zero vectors give zero output with finite gradients;
    ``epsilon`` goes under the square root of the variance.

    Args:
      momentum: running statistics ``r <- momentum r + (1 - momentum) batch`` (flax's
        convention), updated only when ``training=True``.
      epsilon: variance epsilon.
      norm_epsilon: added to ``||V||`` in the direction (see above).
      use_scale, use_bias: BatchNorm's affine ``gamma_c`` (``scale``, ones) and ``beta_c``
        (``bias``, zeros), shape ``[C]``.
      axis_name: if set, statistics are also averaged over this ``pmap``/``shard_map``
        axis (sums of values and counts are ``psum``-ed).
      scalars: for an IrrepsArray, ``"same"`` or ``"identity"`` for ``l = 0`` chunks.

    State: ``{"mean": [C], "var": [C]}`` (zeros, ones at init). Shapes: vectors
    ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``.
    """
    _check_scalars(scalars)
    name = "vector_neuron_batch_norm"

    def psum(v):
        return jax.lax.psum(v, axis_name) if axis_name is not None else v

    def block(params, state, v, mask, training):
        n = geometry.safe_norm(v, axis=-1)  # [B, N, C]
        if training:
            maxabs = jnp.max(jnp.abs(n), axis=(0, 1), initial=0.0)
            maxabs = jax.lax.pmax(maxabs, axis_name) if axis_name is not None else maxabs
            s = geometry.magnitude_scale(maxabs, epsilon**0.5)  # [C], 1 normally
            ns = n / s
            real = psum(masked_sum(jnp.ones_like(n), mask, (0, 1)))
            count = jnp.maximum(real, 1.0)
            mean = psum(masked_sum(ns, mask, (0, 1))) / count  # [1, 1, C]
            var = psum(masked_sum(jnp.square(ns - mean), mask, (0, 1))) / count
            mean, var = mean[0, 0], var[0, 0]  # [C], of n / s
            rdt = state["mean"].dtype
            kept = real[0, 0] > 0  # a batch without a real node keeps the running averages
            new_state = {
                "mean": jnp.where(kept, (momentum * state["mean"]
                                         + (1 - momentum) * (mean * s)).astype(rdt),
                                  state["mean"]),
                "var": jnp.where(kept, (momentum * state["var"]
                                        + (1 - momentum) * (var * jnp.square(s))).astype(rdt),
                                 state["var"]),
            }
            nhat = (ns - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        else:
            mean, var = state["mean"].astype(v.dtype), state["var"].astype(v.dtype)
            new_state = state
            nhat = (n - mean) * jax.lax.rsqrt(var + epsilon)
            s = geometry.magnitude_scale(n, norm_epsilon)  # per vector, 1 normally
            ns = n / s
        if use_scale:
            nhat = nhat * params["scale"].astype(v.dtype)
        if use_bias:
            nhat = nhat + params["bias"].astype(v.dtype)
        y = _along(v, ns, s, nhat, norm_epsilon)
        return y.astype(v.dtype), new_state

    def params_of(c, dt):
        params = {}
        if use_scale:
            params["scale"] = jnp.ones((c,), dt)
        if use_bias:
            params["bias"] = jnp.zeros((c,), dt)
        return params

    def state_of(c, dt):
        return {"mean": jnp.zeros((c,), dt), "var": jnp.ones((c,), dt)}

    return _vector_layer(name, block, scalars, params_of, state_of)


# --------------------------------------------------------------------------------------------
# EvNorm (UNiTE)
# --------------------------------------------------------------------------------------------


@check_hyperparameters
def ev_norm(
    *,
    epsilon: float = 1e-5,
    beta_init: float = 1.0,
    use_scale: bool = True,
    use_bias: bool = True,
    bias_init: float = 0.0,
    scalars: str = "same",
) -> Norm:
    """EvNorm of UNiTE (Qiao, Christensen, Manby, Welborn, Anandkumar, Miller 2021).

    Survey (Table 1, citing UNiTE):

    .. math::

        \\operatorname{EvNorm}(A) = \\Big(\\frac{\\|A\\|_2 - \\mu_{\\{x,v\\}}}
        {\\sigma_{\\{x,v\\}}},\\; \\frac{A}{\\|A\\|_2 + \\beta}\\Big)

    i.e. an invariant part (standardized norms) and an equivariant part (directions with a
    soft, learnable floor ``beta``); the survey's labels "Positional" and "Invariant" are
    swapped relative to which part is which. In UNiTE the two parts feed the next layer
    separately (the invariant one through an MLP that then gates the equivariant one).
    As a single layer with one output we combine them, with an affine on the invariant
    part:

    .. math::

        y_{xc} = \\Big(\\gamma_c \\frac{\\|V_{xc}\\| - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}
        + \\delta_c\\Big) \\frac{V_{xc}}{\\|V_{xc}\\| + \\max(|\\beta_c|, \\epsilon)}

    ``mu``, ``sigma^2``: mean and biased variance of the norms over the real nodes and the
    channels of each graph (``{x, v}``, per sample, as the survey's subscripts say; for an
    IrrepsArray per chunk). ``epsilon`` goes under the square root of the variance and
    floors ``|beta|``, so zero vectors give finite values and gradients.

    Args:
      epsilon: see above.
      beta_init: initial ``beta`` ``[C]`` (learnable, as the survey lists ``beta`` among
        the learnable parameters).
      use_scale, use_bias: affine ``gamma`` (``scale``, ones) and ``delta`` (``bias``,
        ``bias_init``), shape ``[C]``. With the defaults the invariant factor is the plain
        standardized norm, negative for vectors shorter than average (they are flipped).
      bias_init: initial ``delta``.
      scalars: for an IrrepsArray, ``"same"`` or ``"identity"`` for ``l = 0`` chunks.

    Shapes: vectors ``[batch, nodes, channels, 3]`` or IrrepsArray ``[batch, nodes, irreps]``.
    No running state, no context.
    """
    _check_scalars(scalars)
    name = "ev_norm"

    def block(params, state, v, mask, training):
        del training
        n = geometry.safe_norm(v, axis=-1)  # [B, N, C]
        s = _scale(n, (1, 2), epsilon)  # [B, 1, 1], 1 normally
        ns = n / s
        count = masked_count(n, mask, (1, 2))  # [B, 1, 1]
        mean = masked_sum(ns, mask, (1, 2)) / count
        var = masked_sum(jnp.square(ns - mean), mask, (1, 2)) / count
        nhat = (ns - mean) * jax.lax.rsqrt(var + epsilon / jnp.square(s))
        if use_scale:
            nhat = nhat * params["scale"].astype(v.dtype)
        if use_bias:
            nhat = nhat + params["bias"].astype(v.dtype)
        beta = jnp.maximum(jnp.abs(params["beta"].astype(v.dtype)), epsilon)
        y = _along(v, ns, s, nhat, beta)
        return y.astype(v.dtype), state

    def params_of(c, dt):
        params = {"beta": jnp.full((c,), beta_init, dt)}
        if use_scale:
            params["scale"] = jnp.ones((c,), dt)
        if use_bias:
            params["bias"] = jnp.full((c,), bias_init, dt)
        return params

    return _vector_layer(name, block, scalars, params_of)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="quaternion_rms_norm",
        constructor=rms_vector_norm,
        kind="vectors",
        paper="Shen, Zhang, Huang, Wei, Zhang 2020, 3D-Rotation-Equivariant Quaternion "
        "Neural Networks (ECCV)",
        formula="A / RMS_{x,v}",
        reduced_axes="x,v,d",
        survey_row="Quaternion [4]",
        kwargs={"reduce": "nodes_channels", "name": "quaternion_rms_norm"},
        notes="Same formula as GVP (the survey calls them identical). Axes follow the "
        "survey's subscripts {x,v} (real nodes and channels of each graph); the original "
        "paper's reduction axes were not verified.",
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="gvp_vector_layer_norm",
        constructor=rms_vector_norm,
        kind="vectors",
        paper="Jing, Eismann, Suriana, Townshend, Dror 2021, Learning from Protein Structure "
        "with Geometric Vector Perceptrons (ICLR); also EGAN, Le, Noe, Clevert 2022",
        formula="V / sqrt(mean_c ||V_c||^2)",
        reduced_axes="v,d",
        survey_row="Vector Perceptron / EGAN [8] [9]",
        kwargs={"reduce": "channels", "name": "gvp_vector_layer_norm"},
        notes="Per node over channels, as in the GVP code; the survey writes RMS_{x,v} "
        "(use reduce='nodes_channels'). GVP LayerNorms the scalar channels separately.",
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
    NormInfo(
        name="vector_neuron_batch_norm",
        constructor=vector_neuron_batch_norm,
        kind="vectors",
        paper="Deng, Litany, Duan, Poulenard, Tagliasacchi, Guibas 2021, Vector Neurons: A "
        "General Framework for SO(3)-Equivariant Networks (ICCV)",
        formula="V/||V|| * BN(||V||)  (survey: (A^pos/||A^pos||_2, BN(A^inv)))",
        reduced_axes="b,x (per channel), d for the norm",
        params=("scale", "bias"),
        running_state=("mean", "var"),
        survey_row="Vector Neuron [22]",
        notes="Running statistics per channel; direction V/(||V|| + 1e-6) as in the authors' code.",
        symmetries=("SO3", "O3", "permutation"),
    ),
    NormInfo(
        name="ev_norm",
        constructor=ev_norm,
        kind="vectors",
        paper="Qiao, Christensen, Manby, Welborn, Anandkumar, Miller 2021, UNiTE: Unitary "
        "N-body Tensor Equivariant Network with Applications to Quantum Chemistry",
        formula="((||A|| - mu_{x,v})/sigma_{x,v}, A/(||A|| + beta))",
        reduced_axes="x,v (per sample), d for the norm",
        params=("beta", "scale", "bias"),
        survey_row="EvNorm [21]",
        notes="The invariant and equivariant parts are multiplied into one output, with an "
        "affine on the standardized norm. beta learnable per channel, floored at epsilon.",
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
]
