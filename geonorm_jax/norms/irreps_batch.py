"""e3nn's ``BatchNorm`` of irreps features, and its per-graph instance norm (SEGNN).

* :func:`e3nn_batch_norm`: statistics per channel over the real nodes of the batch
  (``{b, x}``) with running averages (e3nn's momentum 0.1), or with ``instance=True`` over
  the real nodes of each graph (``{x}``) without running state.

Papers: Geiger & Smidt 2022, *e3nn: Euclidean Neural Networks* (arXiv:2207.09453); instance
mode as in SEGNN (Brandstetter, Hesselink, van der Pol, Bekkers, Welling, ICLR 2022). Code:
``e3nn/nn/_batchnorm.py``, ``e3nn_jax/_src/batchnorm.py``.

Layouts: this library's padded IrrepsArray ``[batch, nodes, irreps]`` or vectors ``[batch,
nodes, channels, 3]`` with ``mask [batch, nodes]``, or e3nn-jax's / jraph's flat ``[num_nodes,
irreps]`` / ``[num_nodes, channels, 3]`` with ``segment_ids=`` + ``num_graphs=`` or
``n_node=`` and ``mask [num_nodes]`` (:mod:`geonorm_jax.norms.irreps_common`): the statistics
count only real nodes (``jnp.where``); instance statistics are per graph in either layout
(``jax.ops.segment_sum`` in the flat one). Squared statistics are taken of ``x / s`` with
``s = max(1, max|x|)`` per channel over the reduction group, the epsilon divided by ``s^2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from geonorm_jax.norms.base import (
    Norm,
    NormInfo,
    check_choice,
    check_hyperparameters,
    zero_padding,
)
from geonorm_jax.norms.irreps_common import (
    _affine_init,
    _affine_shapes,
    _assemble,
    _check_param_shapes,
    _group_max_abs,
    _group_sum,
    _init_irreps,
    _is_even_scalar,
    _num_scalars,
    _param_slices,
    _per_channel,
    _prepare,
    _sq_stat,
)

__all__ = ["e3nn_batch_norm", "CATALOG_ENTRIES"]


@check_hyperparameters
def e3nn_batch_norm(
    *,
    instance: bool = False,
    normalization: str = "component",
    momentum: float = 0.1,
    epsilon: float = 1e-5,
    affine: bool = True,
) -> Norm:
    """e3nn's ``BatchNorm`` on irreps, and with ``instance=True`` its per-graph instance norm.

    For every chunk (``mul x ir``), per channel ``c``, with statistics over the real nodes of
    the whole batch (``{b, x}``) or, with ``instance=True``, of each graph (``{x}``):

    .. math::

        \\tilde x_{cm} = x_{cm} - [\\text{ir} = 0e]\\,\\mu_c, \\qquad
        \\sigma^2_c = \\operatorname{mean}_{b,x}\\ \\operatorname{mean}_m \\tilde x_{cm}^2, \\qquad
        y_{cm} = \\gamma_c \\tilde x_{cm} / \\sqrt{\\sigma^2_c + \\epsilon} + [0e]\\,\\beta_c

    (``sum_m`` for ``normalization="norm"``). ``mu_c`` is the mean of the ``0e`` channel
    (only even scalars are centred, e3nn's ``ir.is_scalar()``). Batch mode keeps running
    averages ``r <- (1 - momentum) r + momentum * batch`` (e3nn's convention, momentum 0.1)
    updated when ``training=True`` and used otherwise; instance mode has no running state and
    uses the graph's own statistics always (as e3nn with ``instance=True``). e3nn pools the
    batch statistics as a mean over nodes then over graphs; here the pooled mean over all real
    nodes (the same for graphs of equal size). Only ``reduce="mean"`` is implemented.

    Papers: Geiger & Smidt 2022, *e3nn: Euclidean Neural Networks*; instance mode as in
    SEGNN (Brandstetter, Hesselink, van der Pol, Bekkers, Welling, ICLR 2022). Code:
    ``e3nn/nn/_batchnorm.py``, ``e3nn_jax/_src/batchnorm.py``.

    Shapes: as :func:`equivariant_layer_norm` (padded or flat). In the flat layout the batch
    statistics pool every real node; jraph's trailing padding graph must be marked (``mask``
    from ``jraph.get_node_padding_mask``, or ``n_node`` of the real graphs only), while
    instance statistics leave it a graph of its own. Params ``scale [num_irreps]``,
    ``bias [n_0e]``; state (batch mode) ``mean [n_0e]`` (zeros; absent when the input has no
    ``0e`` channel, since checkpoints cannot hold zero-size arrays), ``var [num_irreps]``
    (ones).
    """
    check_choice(normalization, ("component", "norm"), "e3nn_batch_norm: normalization")
    name = "e3nn_instance_norm" if instance else "e3nn_batch_norm"
    batch = not instance  # the reduction group: the whole batch, or each graph

    def init(key, x, **context):
        del key
        xi = _init_irreps(x, name, context)
        dt = xi.array.dtype
        n0 = _num_scalars(xi.irreps)
        state = {} if instance else {"var": jnp.ones((xi.irreps.num_irreps,), dt)}
        if not instance and n0:
            state["mean"] = jnp.zeros((n0,), dt)
        return _affine_init(xi.irreps, dt, affine), state

    def apply(params, state, x, *, mask=None, training=False, **context):
        xi, raw, dtype, blocks, graphs = _prepare(x, name, mask, params, _affine_shapes, context)
        if not instance:
            n0 = _num_scalars(xi.irreps)
            _check_param_shapes(state, {"var": (xi.irreps.num_irreps,),
                                        **({"mean": (n0,)} if n0 else {})}, name, x)
        lead = xi.array.shape[:-1]  # (batch, nodes) or (num_nodes,)
        cdt = blocks[0].dtype if blocks else jnp.float32
        # real nodes per group, never below 1: [B|1, 1, 1, 1] or [num_nodes|1, 1, 1]
        n_real = _group_sum(jnp.ones(lead + (1, 1), cdt), graphs, batch)
        count = jnp.maximum(n_real, 1.0)
        use_batch = training or instance
        new_mean, new_var, out = [], [], []
        for mi, f, (ps, pb) in zip(xi.irreps, blocks, _param_slices(xi.irreps), strict=True):
            # s: max(1, max |x|) over the reduction group, per channel: [..., mul, 1]
            s = jax.lax.stop_gradient(jnp.maximum(_group_max_abs(f, graphs, batch), 1.0))
            g = f / s
            if _is_even_scalar(mi):
                if use_batch:
                    mu = _group_sum(g, graphs, batch) / count
                    if not instance:
                        new_mean.append((mu * s).reshape(-1))
                else:
                    mu = state["mean"][pb].astype(g.dtype)[:, None] / s
                g = g - mu
            if use_batch:
                sq = _sq_stat(zero_padding(g, graphs), normalization)[..., None]  # [..., mul, 1]
                var = _group_sum(sq, graphs, batch) / count  # scaled by s^2
                if not instance:
                    new_var.append((var * jnp.square(s)).reshape(-1))
            else:
                var = state["var"][ps].astype(g.dtype)[:, None] / jnp.square(s)
            y = g * jax.lax.rsqrt(var + epsilon / jnp.square(s))
            if affine:
                y = y * _per_channel(params, "scale", ps, y)
                if pb is not None:
                    y = y + _per_channel(params, "bias", pb, y)
            out.append(y)
        new_state = state
        if training and not instance:
            cat = lambda v, ref: (jnp.concatenate(v) if v else ref).astype(ref.dtype)
            real = jnp.any(n_real > 0)  # a batch without a real node keeps the running averages
            keep = lambda new, old: jnp.where(real, new, old)  # noqa: E731
            new_state = {
                "var": keep(((1 - momentum) * state["var"] + momentum * cat(
                    new_var, state["var"])).astype(state["var"].dtype), state["var"]),
            }
            if "mean" in state:
                new_state["mean"] = keep(((1 - momentum) * state["mean"] + momentum * cat(
                    new_mean, state["mean"])).astype(state["mean"].dtype), state["mean"])
        return _assemble(xi, out, raw, dtype), new_state

    return Norm(init, apply, kind="vectors", name=name)

# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CATALOG_ENTRIES: list[NormInfo] = [
    NormInfo(
        name="e3nn_batch_norm", constructor=e3nn_batch_norm, kind="vectors",
        paper="Geiger, Smidt 2022, e3nn: Euclidean Neural Networks (arXiv:2207.09453); code "
        "e3nn BatchNorm / e3nn-jax BatchNorm",
        formula="(x - [0e] mu_{b,x}) / sqrt(mean_{b,x} mean_m x^2 + eps) * g + [0e] b",
        reduced_axes="b,x per channel (d for the field norm)", params=("scale", "bias"),
        running_state=("mean", "var"), family="equivariant models",
        notes="Pooled mean over the real nodes of the batch (e3nn: mean over nodes then "
        "graphs, equal for equal sizes). Running averages with e3nn's momentum 0.1.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation"),
    ),
    NormInfo(
        name="e3nn_instance_norm", constructor=e3nn_batch_norm, kind="vectors",
        paper="Geiger, Smidt 2022 (e3nn BatchNorm(instance=True)); used by SEGNN, "
        "Brandstetter et al. 2022 (ICLR)",
        formula="(x - [0e] mu_{x}) / sqrt(mean_{x} mean_m x^2 + eps) * g + [0e] b",
        reduced_axes="x per graph and channel (d for the field norm)", params=("scale", "bias"),
        family="equivariant models", kwargs={"instance": True},
        notes="Per-graph statistics over its real nodes; no running state.",
        layouts=("padded", "flat"),
        symmetries=("SO3", "O3", "permutation", "batch"),
    ),
]
