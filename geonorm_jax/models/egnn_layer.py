r"""One layer of the velocity EGNN (``E_GCL_vel``, Satorras et al., 2021) as a Flax module.

For every edge ``(i, j)`` (``i`` receives, ``j`` sends) and every node ``i`` (Eq. 2 of the
GeoNorm paper (Meng et al.) plus the velocity term):

.. math::

    m_{ij} &= \phi_e(h_i, h_j, \|x_i - x_j\|^2, e_{ij}) \\
    x_i &\leftarrow x_i + \mathrm{UpdateNorm}\big(C \textstyle\sum_j
        \mathrm{clip}_{\pm 100}((x_i - x_j)\,\phi_x(m_{ij}))\big) + \phi_v(h_i)\, v_i \\
    h_i &\leftarrow \mathrm{FeatureNorm}\big(h_i + \phi_h(h_i, \textstyle\sum_j m_{ij})\big),
        \qquad x_i \leftarrow \mathrm{CoordNorm}(x_i; \mu_0)

(see :mod:`geonorm_jax.models.egnn` for the whole model and the reference's conventions).
:class:`EGCLVel` owns the layer's parameters (their names and tree structure are those of the
checkpoints) and takes its configuration as one :class:`LayerSettings`; the per-edge work is
in :mod:`geonorm_jax.models.egnn_kernels` (one device) and
:mod:`geonorm_jax.models.sharding` (node-sharded). Shapes: ``h [B, N, H]``, ``x, v [B, N, 3]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax.linen import NormLayer
from geonorm_jax.models import egnn_kernels as kernels
from geonorm_jax.models import sharding as sharding_lib
from geonorm_jax.models.egnn_kernels import EDGE_ATTR_DIM, EdgeKernelConfig
from geonorm_jax.models.layers import torch_linear_init, xavier_uniform
from geonorm_jax.norms.base import Norm
from geonorm_jax.parallel.nodes import NodeSharding

__all__ = ["LayerSettings", "EGCLVel"]

@dataclasses.dataclass(frozen=True)
class LayerSettings:
    """Everything one ``E_GCL_vel`` layer needs to know, passed to :class:`EGCLVel` as one
    object (frozen, so it can be a Flax module attribute).

    ``hidden`` … ``node_sharding`` are the :class:`EGNN` attributes of the same names
    (``save_dots``: that of the execution plan,
    :class:`~geonorm_jax.models.execution_plan.EdgePlan`);
    ``apply_coord_norm`` says whether this layer's ``coord_norm`` is used (False for the last
    layer unless ``norm_last_layer``); ``training`` is passed to the norms; ``dense`` selects
    the fully connected kernels (otherwise the edge list).
    """

    hidden: int = 64
    coords_agg: str = "mean"
    tanh: bool = False
    coords_range: float = 1.0
    norm_diff: bool = False
    norm_diff_epsilon: float = 1.0
    attention: bool = False
    coord_norm: Norm | None = None
    update_norm: Norm | None = None
    feature_norm: Norm | None = None
    apply_coord_norm: bool = True
    training: bool = False
    dense: bool = True
    edge_chunk: int | str | None = None
    save_dots: bool = False
    matmul_dtype: Any = None
    param_dtype: Any = jnp.float32
    node_sharding: NodeSharding | None = None

    @property
    def kernel(self) -> EdgeKernelConfig:
        """The settings the edge kernels read."""
        return EdgeKernelConfig(
            attention=self.attention,
            tanh=self.tanh,
            coords_range=self.coords_range,
            norm_diff=self.norm_diff,
            norm_diff_epsilon=self.norm_diff_epsilon,
            edge_chunk=self.edge_chunk,
            matmul_dtype=self.matmul_dtype,
            save_dots=self.save_dots,
        )


class EGCLVel(nn.Module):
    """One ``E_GCL_vel`` layer (see the module docstring for the equations and order).

    Attributes:
      settings: the layer's :class:`LayerSettings`.
    """

    settings: LayerSettings = LayerSettings()

    def _linear_params(self, name, fan_in, fan_out, use_bias=True, kernel_init=None):
        param_dtype = self.settings.param_dtype

        def init(key):
            k1, k2 = jax.random.split(key)
            kinit = kernel_init or torch_linear_init(fan_in)
            out = {"kernel": kinit(k1, (fan_in, fan_out), param_dtype)}
            if use_bias:
                out["bias"] = torch_linear_init(fan_in)(k2, (fan_out,), param_dtype)
            return out

        return self.param(name, init)

    @nn.compact
    def __call__(self, h, x, v, edge_attr, node_mask, edge_mask, mu0, senders, receivers):
        """``(h [B,N,H], x [B,N,3]) -> (h, x)``; ``edge_attr``/``edge_mask`` are edge tensors.

        Dense: ``edge_attr [B,N,N,2]``, ``edge_mask [B,N,N]``; edge list: ``[E,2]``, ``[E]``
        with flat ``senders``/``receivers [E]``. ``node_mask [B,N]`` bool or None.
        """
        s = self.settings
        H = s.hidden
        lin = self._linear_params
        # phi_e's first layer: the parameters of Linear(2H + 1 + 2, H), stored by block.
        fan_in = 2 * H + 1 + EDGE_ATTR_DIM
        first = lambda name, shape: self.param(
            name, torch_linear_init(fan_in), shape, s.param_dtype
        )
        p = {
            "edge_w_hi": first("edge_w_hi", (H, H)),
            "edge_w_hj": first("edge_w_hj", (H, H)),
            "edge_w_radial": first("edge_w_radial", (1, H)),
            "edge_w_attr": first("edge_w_attr", (EDGE_ATTR_DIM, H)),
            "edge_bias": first("edge_bias", (H,)),
            "edge_mlp_out": lin("edge_mlp_out", H, H),
            "coord_mlp_hidden": lin("coord_mlp_hidden", H, H),
            "coord_mlp_out": lin(
                "coord_mlp_out", H, 1, use_bias=False, kernel_init=xavier_uniform(0.001)
            ),
        }
        if s.attention:
            p["attention"] = lin("attention", H, 1)
        norm_kw = dict(mask=node_mask, training=s.training, mu0=mu0)
        silu = jax.nn.silu
        cfg = s.kernel

        md = s.matmul_dtype
        # [B, N, H]: the first edge layer's node products, once per node (not per edge)
        a = kernels.linear({"kernel": p["edge_w_hi"], "bias": p["edge_bias"]}, h, md)
        b = kernels.linear({"kernel": p["edge_w_hj"]}, h, md)
        if s.node_sharding is not None:  # per-graph edges [B, E], node-sharded
            update, agg, count = sharding_lib.sharded_list_edges(
                p, a, b, x, edge_attr, senders, receivers, edge_mask, cfg, s.node_sharding
            )
        elif s.dense:
            update, agg = kernels.dense_edges(p, a, b, x, edge_attr, edge_mask, cfg)
            count = jnp.sum(edge_mask, axis=2)[..., None]
        else:
            update, agg = kernels.list_edges(
                p, a, b, x, edge_attr, senders, receivers, edge_mask, cfg
            )
            count = jax.ops.segment_sum(edge_mask, receivers, num_segments=x.shape[0] * x.shape[1])
            count = count.reshape(x.shape[:2] + (1,))
        if s.coords_agg == "mean":
            update = update / jnp.maximum(count, 1.0)
        if s.update_norm is not None:
            update = _apply_update_norm(s.update_norm, update, norm_kw)
        x = x + update

        # Velocity term: this layer's input h, the model's input v.
        vel_hidden, vel_out = lin("vel_mlp_hidden", H, H), lin("vel_mlp_out", H, 1)
        x = x + kernels.linear(vel_out, silu(kernels.linear(vel_hidden, h, md)), md) * v

        # Node update (recurrent / residual); messages were aggregated by sum.
        node_hidden, node_out = lin("node_mlp_hidden", 2 * H, H), lin("node_mlp_out", H, H)
        hidden = kernels.linear(node_hidden, jnp.concatenate([h, agg], -1), md)
        h = h + kernels.linear(node_out, silu(hidden), md)

        if s.feature_norm is not None:
            h = NormLayer(s.feature_norm, name="feature_norm")(h, **norm_kw)
        if s.coord_norm is not None and s.apply_coord_norm:
            x = NormLayer(s.coord_norm, name="coord_norm")(x, **norm_kw)
        if s.node_sharding is not None:
            h, x = s.node_sharding.constrain(h), s.node_sharding.constrain(x)
        return h, x


def _apply_update_norm(norm: Norm, update, norm_kw):
    if norm.kind == "vectors":  # [B, N, 3] -> [B, N, 1, 3] and back
        out = NormLayer(norm, name="update_norm")(update[:, :, None, :], **norm_kw)
        return out[:, :, 0, :]
    return NormLayer(norm, name="update_norm")(update, **norm_kw)
