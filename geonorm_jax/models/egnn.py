r"""The velocity EGNN (Satorras et al., 2021, ``EGNN_vel``) in Flax, with pluggable normalization.

One layer (``E_GCL_vel``; seed 001 Eq. 2 plus the velocity term), for every edge ``(i, j)``
of the graph (``i`` receives, ``j`` sends) and every node ``i``:

.. math::

    m_{ij} &= \phi_e(h_i, h_j, \|x_i - x_j\|^2, e_{ij}) \\
    \Delta_i &= C \sum_{j \ne i} \mathrm{clip}_{\pm 100}\big((x_i - x_j)\,\phi_x(m_{ij})\big),
        \quad C = 1/|\mathcal N(i)| \text{ (mean) or } 1 \text{ (sum)} \\
    x_i &\leftarrow x_i + \mathrm{UpdateNorm}(\Delta_i) + \phi_v(h_i)\, v_i \\
    h_i &\leftarrow h_i + \phi_h(h_i, \textstyle\sum_j m_{ij}) \\
    h_i &\leftarrow \mathrm{FeatureNorm}(h_i), \qquad x_i \leftarrow \mathrm{CoordNorm}(x_i; \mu_0)

in that order (the reference's order: the velocity term uses this layer's input ``h`` and the
model's input velocity, which is never updated). ``phi_e`` = Linear, SiLU, Linear, SiLU;
``phi_x`` = Linear, SiLU, Linear(H -> 1, no bias, xavier-uniform gain 0.001) [, tanh times
``coords_range``]; ``phi_v`` = Linear, SiLU, Linear(H -> 1); ``phi_h`` = Linear(2H -> H), SiLU,
Linear. Inputs as in the reference ``main_nbody.py``: node feature ``h^0 = Linear(||v_i||)``,
edge attributes ``e_ij = [q_i q_j, ||x^0_i - x^0_j||^2]`` from the *input* positions (fixed
across layers, while the radial term inside ``phi_e`` uses the current positions).

Shapes: ``x, v [batch, nodes, 3]``, ``charges [batch, nodes, 1]``, ``mask [batch, nodes]``;
dense edge tensors ``[batch, nodes, nodes, channels]``; edge-list tensors ``[edges, channels]``.

Implementation notes:

* Factorised first edge layer: ``W [h_i; h_j; r_ij; e_ij] + b = (h W_1 + b)_i + (h W_2)_j +
  r_ij w_3 + e_ij W_4``; the node products are computed once per node, so the per-edge work of
  ``phi_e`` is one ``H x H`` product (plus one in ``phi_x``). The parameters are exactly those
  of ``Linear(2H + 1 + 2, H)``.
* Clamping ``(x_i - x_j) phi_x`` to ``[-100, 100]`` element-wise follows the reference (which
  says it "is never activated"); a clamp is not rotation-equivariant, so exact equivariance
  holds only while every update component is below 100.
* ``norm_diff``: ``(x_i - x_j) / (||x_i - x_j|| + norm_diff_epsilon)``. The default epsilon
  1.0 is the reference ``gcl.py`` (used by ``EGNN_vel``); 1e-8 gives the E-NF form
  ``(x_i - x_j)/||x_i - x_j||`` discussed in the GeoNorm paper, section 4.2. The norm is a
  safe norm (finite gradient at coincident particles).
* Padded nodes are excluded from every sum, mean and normalization statistic; their inputs are
  replaced by zeros on entry, so their outputs are finite whatever the padding holds.
* ``node_sharding`` (edge list only) splits one system's nodes over devices; see
  :mod:`geonorm_jax.models.sharding` for the layout and the collectives.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from geonorm_jax import geometry
from geonorm_jax.linen import NormLayer
from geonorm_jax.models import edges as edges_lib
from geonorm_jax.models import sharding as sharding_lib
from geonorm_jax.models.layers import TorchDense, torch_linear_init, xavier_uniform
from geonorm_jax.models.sharding import NodeSharding
from geonorm_jax.norms.base import Norm

__all__ = ["EGNN", "EGCLVel", "make_egnn", "count_params", "PLACES"]

EDGE_ATTR_DIM = 2  # [q_i q_j, ||x^0_i - x^0_j||^2]
CLAMP = 100.0  # the reference's torch.clamp(trans, -100, 100)

# Which Norm kinds each place accepts (None = a user's Norm of unstated kind: accepted).
PLACES = {
    "coord": ("coordinates",),
    "update": ("coordinates", "vectors"),
    "feature": ("features",),
}
_FIELD = {"coord": "coord_norm", "update": "update_norm", "feature": "feature_norm"}


def _check_norm(norm: Any, place: str) -> None:
    if norm is None:
        return
    field = _FIELD[place]
    if not isinstance(norm, Norm):
        raise ValueError(
            f"{field}: expected a geonorm_jax Norm (or None); received {type(norm).__name__}"
        )
    allowed = PLACES[place]
    if norm.kind is not None and norm.kind not in allowed:
        raise ValueError(
            f"{field}: expected a Norm of kind {' or '.join(map(repr, allowed))}; received "
            f"{norm.name!r} of kind {norm.kind!r}"
        )


def _linear(p: dict, x: jax.Array) -> jax.Array:
    """``x W (+ b)`` with the parameters cast to the dtype of ``x``."""
    y = jnp.dot(x, p["kernel"].astype(x.dtype))
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def _edge_messages(p: dict, pre, diff, emask, cfg):
    """Per-edge part of a layer: ``pre`` = first edge layer before SiLU ``[..., H]``.

    Returns the masked coordinate terms ``clip((x_i - x_j) phi_x(m_ij)) [..., 3]`` and the
    masked messages ``m_ij [..., H]``; ``emask [...]`` is 1 for real edges, 0 otherwise.
    """
    silu = jax.nn.silu
    m = silu(_linear(p["edge_mlp_out"], silu(pre)))
    if cfg.attention:
        m = m * jax.nn.sigmoid(_linear(p["attention"], m))
    phi_x = _linear(p["coord_mlp_out"], silu(_linear(p["coord_mlp_hidden"], m)))
    if cfg.tanh:
        phi_x = cfg.coords_range * jnp.tanh(phi_x)
    trans = jnp.clip(diff * phi_x, -CLAMP, CLAMP)
    emask = emask[..., None]
    return trans * emask, m * emask


def _edge_geometry(diff, cfg):
    radial = jnp.sum(jnp.square(diff), axis=-1, keepdims=True)  # ||x_i - x_j||^2, [..., 1]
    if cfg.norm_diff:
        length = geometry.safe_norm(diff, axis=-1, keepdims=True)
        diff = diff / (length + cfg.norm_diff_epsilon)
    return diff, radial


def _first_edge_layer(p, a_i, b_j, radial, edge_attr):
    """``W [h_i; h_j; r_ij; e_ij] + b`` as ``a_i + b_j + r_ij w_r + e_ij W_e`` (factorised)."""
    w_r, w_e = p["edge_w_radial"].astype(a_i.dtype), p["edge_w_attr"].astype(a_i.dtype)
    pre = a_i + b_j + radial * w_r[0]
    for c in range(EDGE_ATTR_DIM):
        pre = pre + edge_attr[..., c : c + 1] * w_e[c]
    return pre


def _chunked(fn, xs, num_chunks: int):
    """``fn(xs)`` summed/stacked over ``num_chunks`` chunks of the leading axis.

    With one chunk this is ``fn(xs)``. Otherwise ``lax.map`` runs ``jax.checkpoint(fn)`` on
    each chunk: the backward pass recomputes one chunk's edge tensors at a time, so memory
    holds only one chunk of ``[edges, H]`` intermediates.
    """
    if num_chunks == 1:
        return fn(xs)
    split = lambda a: a.reshape((num_chunks, a.shape[0] // num_chunks) + a.shape[1:])
    out = jax.lax.map(jax.checkpoint(fn), jax.tree_util.tree_map(split, xs))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)


def _dense_edges(p, a, b, x, edge_attr, pair_mask, cfg):
    """Fully connected graph: ``(sum_j trans_ij [B,N,3], sum_j m_ij [B,N,H])``.

    Chunks over graphs: ``g`` graphs per chunk, the largest divisor of ``B`` with
    ``g N^2 <= edge_chunk`` (at least 1).
    """
    batch, n = x.shape[:2]

    def fn(xs):
        a, b, x, edge_attr, pair_mask = xs
        diff, radial = _edge_geometry(x[:, :, None] - x[:, None, :], cfg)  # [g, N, N, .]
        pre = _first_edge_layer(p, a[:, :, None], b[:, None, :], radial, edge_attr)
        trans, m = _edge_messages(p, pre, diff, pair_mask, cfg)
        return jnp.sum(trans, axis=2), jnp.sum(m, axis=2)

    per_chunk = max(1, (cfg.edge_chunk or batch * n * n) // (n * n))
    g = max(d for d in range(1, batch + 1) if batch % d == 0 and d <= per_chunk)
    return _chunked(fn, (a, b, x, edge_attr, pair_mask), batch // g)


def _list_edges(p, a, b, x, edge_attr, senders, receivers, emask, cfg):
    """Edge list (flat over ``B N`` nodes): segment sums over receivers, chunked over edges."""
    batch, n = x.shape[:2]
    flat = lambda t: t.reshape((batch * n,) + t.shape[2:])
    a, b, x = flat(a), flat(b), flat(x)

    def fn(xs):
        s, r, em, ea = xs
        diff, radial = _edge_geometry(x[r] - x[s], cfg)  # [c, 3], [c, 1]
        pre = _first_edge_layer(p, a[r], b[s], radial, ea)
        trans, m = _edge_messages(p, pre, diff, em, cfg)
        out = jnp.concatenate([trans, m], axis=-1)
        return jax.ops.segment_sum(out, r, num_segments=batch * n)

    xs = (senders, receivers, emask, edge_attr)
    zeros = lambda: jnp.zeros((batch * n, 3 + a.shape[-1]), x.dtype)
    total = _sum_edge_chunks(fn, xs, zeros, cfg.edge_chunk)
    total = total.reshape(batch, n, -1)
    return total[..., :3], total[..., 3:]


def _sum_edge_chunks(fn, xs, zeros, edge_chunk):
    """``sum_c fn(xs[c])`` over chunks of ``edge_chunk`` edges (the leading axis of ``xs``).

    ``xs`` is padded with zeros (masked edges to node 0) to a whole number of chunks; with
    more than one chunk, ``lax.scan`` accumulates ``jax.checkpoint(fn)`` from ``zeros()``, so
    the backward pass holds one chunk of edge intermediates at a time.
    """
    num_edges = xs[0].shape[0]
    chunk = min(edge_chunk or num_edges, num_edges)
    num_chunks = -(-num_edges // chunk)
    pad = num_chunks * chunk - num_edges
    if pad:
        xs = tuple(jnp.pad(t, [(0, pad)] + [(0, 0)] * (t.ndim - 1)) for t in xs)
    if num_chunks == 1:
        return fn(xs)
    split = lambda t: t.reshape((num_chunks, chunk) + t.shape[1:])
    body = jax.checkpoint(fn)
    total, _ = jax.lax.scan(
        lambda acc, c: (acc + body(c), None), zeros(), jax.tree_util.tree_map(split, xs)
    )
    return total


def _sharded_list_edges(p, a, b, x, edge_attr, senders, receivers, emask, cfg):
    """Node-sharded edge list: ``(sum_j trans_ij, sum_j m_ij, count_i)``, sharded over nodes.

    Node arrays ``a, b [B, N, H]``, ``x [B, N, 3]`` and per-graph edges ``[B, E]`` (``[B, E,
    2]``) split over ``cfg.node_sharding`` (the layout of :mod:`geonorm_jax.models.sharding`).
    Under ``jax.shard_map``, device ``d``:

    1. all-gathers ``[b, x]`` (sender side, ``[B, N, H + 3]``), the only collective;
    2. reads ``a_i``, ``x_i`` of its receivers from its own block ``[B, N/D, .]``;
    3. runs the per-edge MLPs on its ``B E/D`` edges (chunked by ``edge_chunk`` as in
       :func:`_list_edges`) and segment-sums ``[trans, m, edge_mask]`` into its local
       receivers ``[B N/D, 3 + H + 1]``.

    The parameters ``p`` enter replicated (``P()``); their gradients are summed (``psum``) over
    devices by ``shard_map``'s transpose, and the all-gather's transpose reduce-scatters the
    sender cotangents.
    """
    ns: NodeSharding = cfg.node_sharding
    batch, n = x.shape[:2]
    hidden = a.shape[-1]
    block = n // ns.num_shards

    def local(p, a, bx, ea, s, r, em):
        # a [B, N/D, H], bx [B, N/D, H + 3]; ea [B, E/D, 2]; s, r, em [B, E/D]
        full = sharding_lib.gather_nodes(bx, ns.axis).reshape(batch * n, hidden + 3)
        b_all, x_all = full[:, :hidden], full[:, hidden:]
        a_loc, x_loc = a.reshape(-1, hidden), bx[..., hidden:].reshape(-1, 3)
        r_loc, em = sharding_lib.local_receivers(r, em, block, ns.axis)
        s_all = (s + (jnp.arange(batch, dtype=s.dtype) * n)[:, None]).reshape(-1)

        def fn(xs):
            s, r, em, ea = xs
            diff, radial = _edge_geometry(x_loc[r] - x_all[s], cfg)  # [c, 3], [c, 1]
            pre = _first_edge_layer(p, a_loc[r], b_all[s], radial, ea)
            trans, m = _edge_messages(p, pre, diff, em, cfg)
            out = jnp.concatenate([trans, m, em[:, None]], axis=-1)
            return jax.ops.segment_sum(out, r, num_segments=batch * block)

        zeros = lambda: jax.lax.pcast(
            jnp.zeros((batch * block, hidden + 4), x.dtype), ns.axis, to="varying"
        )
        xs = (s_all, r_loc, em.reshape(-1), ea.reshape(-1, ea.shape[-1]))
        total = _sum_edge_chunks(fn, xs, zeros, cfg.edge_chunk)
        return total.reshape(batch, block, hidden + 4)

    spec = ns.spec
    total = jax.shard_map(
        local, mesh=ns.mesh, in_specs=(P(),) + (spec,) * 6, out_specs=spec
    )(p, a, jnp.concatenate([b, x], axis=-1), edge_attr, senders, receivers, emask)
    total = ns.constrain(total)
    return total[..., :3], total[..., 3 : 3 + hidden], total[..., 3 + hidden :]


def _sharded_edge_inputs(x, charges, mask, senders, receivers, edge_mask, ns: NodeSharding):
    """Edge attributes ``[q_i q_j, ||x_i - x_j||^2] [B, E, 2]`` and the float edge mask ``[B, E]``.

    The node-sharded counterpart of the edge-list branch of :meth:`EGNN.__call__`: under
    ``shard_map`` each device all-gathers ``[x, q, mask] [B, N, 5]`` and computes its own
    edge block; edges touching a padded node, or outside their node block, are masked.
    """
    batch, n = x.shape[:2]
    block = n // ns.num_shards
    dtype = x.dtype
    node_mask = jnp.ones((batch, n), dtype) if mask is None else mask.astype(dtype)

    def local(xqm, s, r, em):  # xqm [B, N/D, 5]; s, r, em [B, E/D]
        full = sharding_lib.gather_nodes(xqm, ns.axis).reshape(batch * n, 5)
        loc = xqm.reshape(-1, 5)
        r_loc, em = sharding_lib.local_receivers(r, em, block, ns.axis)
        s_all = (s + (jnp.arange(batch, dtype=s.dtype) * n)[:, None]).reshape(-1)
        xi, xj = loc[r_loc], full[s_all]
        em = em.reshape(-1).astype(dtype) * xi[:, 4] * xj[:, 4]
        r0 = jnp.sum(jnp.square(xi[:, :3] - xj[:, :3]), axis=-1)
        attr = jnp.stack([xi[:, 3] * xj[:, 3], r0], axis=-1)
        return attr.reshape(batch, -1, 2), em.reshape(batch, -1)

    spec = ns.spec
    xqm = jnp.concatenate([x, charges, node_mask[..., None]], axis=-1)
    return jax.shard_map(local, mesh=ns.mesh, in_specs=(spec,) * 4, out_specs=(spec, spec))(
        xqm, senders, receivers, edge_mask
    )


class EGCLVel(nn.Module):
    """One ``E_GCL_vel`` layer (see the module docstring for the equations and order).

    Attributes are those of :class:`EGNN`; ``apply_coord_norm`` says whether this layer's
    ``coord_norm`` is used (False for the last layer unless ``norm_last_layer``).
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
    edge_chunk: int | None = None
    param_dtype: Any = jnp.float32
    node_sharding: NodeSharding | None = None

    def _linear_params(self, name, fan_in, fan_out, use_bias=True, kernel_init=None):
        def init(key):
            k1, k2 = jax.random.split(key)
            kinit = kernel_init or torch_linear_init(fan_in)
            out = {"kernel": kinit(k1, (fan_in, fan_out), self.param_dtype)}
            if use_bias:
                out["bias"] = torch_linear_init(fan_in)(k2, (fan_out,), self.param_dtype)
            return out

        return self.param(name, init)

    @nn.compact
    def __call__(self, h, x, v, edge_attr, node_mask, edge_mask, mu0, senders, receivers):
        """``(h [B,N,H], x [B,N,3]) -> (h, x)``; ``edge_attr``/``edge_mask`` are edge tensors.

        Dense: ``edge_attr [B,N,N,2]``, ``edge_mask [B,N,N]``; edge list: ``[E,2]``, ``[E]``
        with flat ``senders``/``receivers [E]``. ``node_mask [B,N]`` bool or None.
        """
        H, dtype = self.hidden, x.dtype
        lin = self._linear_params
        # phi_e's first layer: the parameters of Linear(2H + 1 + 2, H), stored by block.
        fan_in = 2 * H + 1 + EDGE_ATTR_DIM
        first = lambda name, shape: self.param(
            name, torch_linear_init(fan_in), shape, self.param_dtype
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
        if self.attention:
            p["attention"] = lin("attention", H, 1)
        norm_kw = dict(mask=node_mask, training=self.training, mu0=mu0)
        silu = jax.nn.silu

        a = h @ p["edge_w_hi"].astype(dtype) + p["edge_bias"].astype(dtype)  # [B, N, H]
        b = h @ p["edge_w_hj"].astype(dtype)
        if self.node_sharding is not None:  # per-graph edges [B, E], node-sharded
            update, agg, count = _sharded_list_edges(
                p, a, b, x, edge_attr, senders, receivers, edge_mask, self
            )
        elif self.dense:
            update, agg = _dense_edges(p, a, b, x, edge_attr, edge_mask, self)
            count = jnp.sum(edge_mask, axis=2)[..., None]
        else:
            update, agg = _list_edges(p, a, b, x, edge_attr, senders, receivers, edge_mask, self)
            count = jax.ops.segment_sum(edge_mask, receivers, num_segments=x.shape[0] * x.shape[1])
            count = count.reshape(x.shape[:2] + (1,))
        if self.coords_agg == "mean":
            update = update / jnp.maximum(count, 1.0)
        if self.update_norm is not None:
            update = _apply_update_norm(self.update_norm, update, norm_kw)
        x = x + update

        # Velocity term: this layer's input h, the model's input v.
        vel_hidden, vel_out = lin("vel_mlp_hidden", H, H), lin("vel_mlp_out", H, 1)
        x = x + _linear(vel_out, silu(_linear(vel_hidden, h))) * v

        # Node update (recurrent / residual); messages were aggregated by sum.
        node_hidden, node_out = lin("node_mlp_hidden", 2 * H, H), lin("node_mlp_out", H, H)
        h = h + _linear(node_out, silu(_linear(node_hidden, jnp.concatenate([h, agg], -1))))

        if self.feature_norm is not None:
            h = NormLayer(self.feature_norm, name="feature_norm")(h, **norm_kw)
        if self.coord_norm is not None and self.apply_coord_norm:
            x = NormLayer(self.coord_norm, name="coord_norm")(x, **norm_kw)
        if self.node_sharding is not None:
            h, x = self.node_sharding.constrain(h), self.node_sharding.constrain(x)
        return h, x


def _apply_update_norm(norm: Norm, update, norm_kw):
    if norm.kind == "vectors":  # [B, N, 3] -> [B, N, 1, 3] and back
        out = NormLayer(norm, name="update_norm")(update[:, :, None, :], **norm_kw)
        return out[:, :, 0, :]
    return NormLayer(norm, name="update_norm")(update, **norm_kw)


class EGNN(nn.Module):
    """The velocity EGNN of the N-body experiments, with a ``Norm`` (or None) at named places.

    Attributes:
      hidden: width ``H`` of every MLP (reference: 64).
      num_layers: number of ``E_GCL_vel`` layers (reference: 4).
      coord_norm: ``Norm`` of kind ``"coordinates"`` applied to the positions after each
        layer (``geo_norm``, ``scale_norm``, ``layer_norm_coords``). It receives
        ``mu0 = centroid(x^0)``, the masked centroid of the input positions ``[batch, 3]``.
      update_norm: ``Norm`` of kind ``"coordinates"`` or ``"vectors"`` (as ``[B, N, 1, 3]``)
        applied to the aggregated coordinate update ``C sum_j (x_i - x_j) phi_x(m_ij)`` before
        it is added.
      feature_norm: ``Norm`` of kind ``"features"`` applied to ``h`` after each layer.
      norm_last_layer: whether ``coord_norm`` also follows the last layer. Default False:
        the last layer's positions are the prediction, and normalizing them constrains it
        (ScaleNorm would fix every particle's distance to the origin). This matches the only
        public GeoNorm code (applied after every layer except the last); the paper's figure is
        ambiguous. ``update_norm`` and ``feature_norm`` act in every layer.
      coords_agg: ``"mean"`` (reference; divides by the number of real neighbours) or ``"sum"``.
      tanh: apply ``coords_range * tanh`` to ``phi_x`` (reference option; the reference
        defines but never uses ``coords_range``, so ``coords_range=1.0`` reproduces it).
      coords_range: scale of the tanh output.
      norm_diff: use ``(x_i - x_j) / (||x_i - x_j|| + norm_diff_epsilon)`` in the update.
      norm_diff_epsilon: 1.0 as in the reference ``gcl.py``; 1e-8 for the E-NF form.
      attention: multiply ``m_ij`` by ``sigmoid(Linear(m_ij))`` (reference option, off).
      remat: rematerialise each layer in the backward pass (``nn.remat``/``jax.checkpoint``),
        trading one extra forward for memory; use it for large ``N``.
      graph: ``"dense"`` (fully connected over the node mask) or ``"edges"`` (edge list; then
        ``senders``/``receivers`` are required). Passing ``senders`` selects the edge list in
        either case.
      param_dtype: dtype of the parameters (computation runs in the dtype of ``x``).
      node_sharding: a :class:`~geonorm_jax.models.sharding.NodeSharding` (mesh + axis) to
        split one large system over devices along the node axis (edge-list graph only;
        ValueError for the dense graph). Inputs are per-graph edges ``[batch, E]`` in the
        node-block layout (:func:`~geonorm_jax.models.sharding.partition_edges`, or a kNN
        graph with ``D | N``); ``D`` must divide ``N`` and ``E``
        (:func:`~geonorm_jax.models.sharding.shard_graph` pads and places everything). The
        per-edge work runs under ``jax.shard_map`` (one all-gather of ``[h W_2, x]`` per
        layer), the rest is GSPMD-partitioned; the output ``[batch, N, 3]`` is sharded over
        nodes. None (default): one device, unchanged.

    Note: a per-particle GeoNorm (``params="particle"``) has parameters ``[N, 1]`` fixed at
    initialisation, so such a model only runs at the ``N`` it was initialised with.
    """

    hidden: int = 64
    num_layers: int = 4
    coord_norm: Norm | None = None
    update_norm: Norm | None = None
    feature_norm: Norm | None = None
    norm_last_layer: bool = False
    coords_agg: str = "mean"
    tanh: bool = False
    coords_range: float = 1.0
    norm_diff: bool = False
    norm_diff_epsilon: float = 1.0
    attention: bool = False
    remat: bool = False
    graph: str = "dense"
    edge_chunk: int | None = 16384
    param_dtype: Any = jnp.float32
    node_sharding: NodeSharding | None = None

    def __post_init__(self):
        _check_norm(self.coord_norm, "coord")
        _check_norm(self.update_norm, "update")
        _check_norm(self.feature_norm, "feature")
        if self.coords_agg not in ("mean", "sum"):
            raise ValueError(f"coords_agg: expected 'mean' or 'sum'; received {self.coords_agg!r}")
        if self.graph not in ("dense", "edges"):
            raise ValueError(f"graph: expected 'dense' or 'edges'; received {self.graph!r}")
        if self.node_sharding is not None and not isinstance(self.node_sharding, NodeSharding):
            raise ValueError(
                f"node_sharding: expected a NodeSharding or None; received "
                f"{type(self.node_sharding).__name__}"
            )
        if self.num_layers < 1 or self.hidden < 1:
            raise ValueError(
                f"expected num_layers >= 1 and hidden >= 1; received {self.num_layers}, "
                f"{self.hidden}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        v: jax.Array,
        charges: jax.Array,
        mask: jax.Array | None = None,
        *,
        training: bool = False,
        senders: jax.Array | None = None,
        receivers: jax.Array | None = None,
        edge_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Predict positions ``[batch, nodes, 3]`` from positions, velocities and charges.

        Args:
          x: input positions ``[batch, nodes, 3]``, float.
          v: input velocities ``[batch, nodes, 3]``.
          charges: ``[batch, nodes, 1]``; they enter through ``q_i q_j``.
          mask: node mask ``[batch, nodes]`` bool (True = real node), or None.
          training: passed to the norms (running statistics update when True and the
            ``"batch_stats"`` collection is mutable).
          senders, receivers, edge_mask: edge list (see :mod:`geonorm_jax.models.edges`),
            per graph ``[batch, edges]`` or flat ``[edges]`` over ``batch * nodes``.
        """
        _check_inputs(x, v, charges, mask)
        use_edges = senders is not None or receivers is not None
        if self.graph == "edges" and not use_edges:
            raise ValueError("graph='edges': expected senders and receivers; received None")
        batch, n, _ = x.shape
        dtype = x.dtype
        v, charges = v.astype(dtype), charges.astype(dtype)
        if mask is not None:
            real = mask[..., None]
            x, v, charges = (jnp.where(real, a, 0.0) for a in (x, v, charges))
        mu0 = geometry.centroid(x, mask)  # [B, 3]

        if self.node_sharding is not None:
            if not use_edges:
                raise ValueError(
                    "node_sharding: expected the edge-list graph (senders, receivers); the "
                    "dense graph cannot be sharded over nodes"
                )
            ns = self.node_sharding
            senders, receivers, emask = _prepare_sharded_edges(
                senders, receivers, edge_mask, batch, n, ns
            )
            x, v, charges = ns.constrain(x), ns.constrain(v), ns.constrain(charges)
            mask = None if mask is None else ns.constrain(mask)
            edge_attr, emask = _sharded_edge_inputs(x, charges, mask, senders, receivers, emask, ns)
        elif use_edges:
            senders, receivers, emask = _prepare_edges(senders, receivers, edge_mask, batch, n)
            if mask is not None:
                flat_mask = mask.reshape(-1)
                emask = emask & flat_mask[senders] & flat_mask[receivers]
            emask = emask.astype(dtype)
            xf, qf = x.reshape(-1, 3), charges.reshape(-1)
            r0 = jnp.sum(jnp.square(xf[receivers] - xf[senders]), axis=-1)
            edge_attr = jnp.stack([qf[receivers] * qf[senders], r0], axis=-1)  # [E, 2]
        else:
            pair = 1.0 - jnp.eye(n, dtype=dtype)[None]
            if mask is not None:
                m = mask.astype(dtype)
                pair = pair * m[:, :, None] * m[:, None, :]
            emask = jnp.broadcast_to(pair, (batch, n, n))
            r0 = jnp.sum(jnp.square(x[:, :, None] - x[:, None, :]), axis=-1)
            q = charges[..., 0]
            edge_attr = jnp.stack([q[:, :, None] * q[:, None, :], r0], axis=-1)  # [B, N, N, 2]

        speed = geometry.safe_norm(v, axis=-1, keepdims=True)  # ||v_i||, [B, N, 1]
        h = TorchDense(self.hidden, name="embedding", param_dtype=self.param_dtype)(speed)

        layer_cls = nn.remat(EGCLVel) if self.remat else EGCLVel
        for layer in range(self.num_layers):
            h, x = layer_cls(
                hidden=self.hidden,
                coords_agg=self.coords_agg,
                tanh=self.tanh,
                coords_range=self.coords_range,
                norm_diff=self.norm_diff,
                norm_diff_epsilon=self.norm_diff_epsilon,
                attention=self.attention,
                coord_norm=self.coord_norm,
                update_norm=self.update_norm,
                feature_norm=self.feature_norm,
                apply_coord_norm=self.norm_last_layer or layer < self.num_layers - 1,
                training=training,
                dense=not use_edges,
                edge_chunk=self.edge_chunk,
                param_dtype=self.param_dtype,
                node_sharding=self.node_sharding,
                name=f"layer_{layer}",
            )(h, x, v, edge_attr, mask, emask, mu0, senders, receivers)
        return x


def _shape(a) -> Any:
    return getattr(a, "shape", None)


def _check_inputs(x, v, charges, mask) -> None:
    if getattr(x, "ndim", None) != 3 or x.shape[-1] != 3:
        raise ValueError(f"x: expected coordinates [batch, nodes, 3]; received shape {_shape(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype; received {x.dtype} (shape {x.shape})")
    batch, n, _ = x.shape
    if _shape(v) != x.shape:
        raise ValueError(
            f"v: expected velocities [batch, nodes, 3] = {x.shape} like x; received shape "
            f"{_shape(v)}"
        )
    if _shape(charges) != (batch, n, 1):
        raise ValueError(
            f"charges: expected [batch, nodes, 1] = {(batch, n, 1)}; received shape "
            f"{_shape(charges)}"
        )
    if mask is not None and (_shape(mask) != (batch, n) or mask.dtype != jnp.bool_):
        raise ValueError(
            f"mask: expected a bool node mask [batch, nodes] = {(batch, n)}; received shape "
            f"{_shape(mask)} with dtype {getattr(mask, 'dtype', None)}"
        )


def _prepare_edges(senders, receivers, edge_mask, batch, n):
    _check_edges(senders, receivers, edge_mask, batch)
    return edges_lib.flatten_edges(senders, receivers, edge_mask, n)


def _prepare_sharded_edges(senders, receivers, edge_mask, batch, n, ns: NodeSharding):
    """Per-graph edges ``[B, E]`` for the node-sharded path (flat ``[E]`` only when ``B = 1``).

    Checks ``D | N`` and ``D | E``; with concrete (not traced) receivers, also the node-block
    layout (:func:`geonorm_jax.models.sharding.check_partition`). Under ``jit`` a wrong layout
    cannot be detected: its out-of-block edges are masked out (dropped).
    """
    _check_edges(senders, receivers, edge_mask, batch)
    if senders.ndim == 1:
        if batch != 1:
            raise ValueError(
                f"node_sharding: expected per-graph edges [batch={batch}, edges] (flat edges "
                f"only for batch 1); received flat shape {senders.shape}"
            )
        senders, receivers = senders[None], receivers[None]
        edge_mask = None if edge_mask is None else edge_mask[None]
    if edge_mask is None:
        edge_mask = jnp.ones(senders.shape, bool)
    shards = ns.num_shards
    if n % shards or senders.shape[1] % shards:
        raise ValueError(
            f"node_sharding: expected nodes and edges per graph divisible by the number of "
            f"shards {shards}; received {n} nodes and {senders.shape[1]} edges (pad with "
            f"geonorm_jax.models.sharding.shard_graph)"
        )
    pair = (receivers, edge_mask)
    # across hosts a process cannot read the other processes' blocks: check only local arrays
    if not any(isinstance(a, jax.core.Tracer) for a in pair) and all(
        getattr(a, "is_fully_addressable", True) for a in pair
    ):
        sharding_lib.check_partition(np.asarray(receivers), np.asarray(edge_mask), n, shards)
    return senders, receivers, edge_mask.astype(bool)


def _check_edges(senders, receivers, edge_mask, batch):
    if senders is None or receivers is None:
        raise ValueError("senders and receivers: expected both or neither; received one")
    if _shape(senders) != _shape(receivers) or senders.ndim not in (1, 2):
        raise ValueError(
            f"senders, receivers: expected equal shapes [edges] or [batch, edges]; received "
            f"{_shape(senders)} and {_shape(receivers)}"
        )
    if senders.ndim == 2 and senders.shape[0] != batch:
        raise ValueError(
            f"senders: expected per-graph edges [batch={batch}, edges]; received shape "
            f"{senders.shape}"
        )
    if not jnp.issubdtype(senders.dtype, jnp.integer):
        raise ValueError(f"senders: expected integer indices; received dtype {senders.dtype}")
    if edge_mask is not None and _shape(edge_mask) != senders.shape:
        raise ValueError(
            f"edge_mask: expected the shape of senders {senders.shape}; received "
            f"{_shape(edge_mask)}"
        )


def make_egnn(
    norm: str | Norm | None = None,
    place: str = "coord",
    norm_kwargs: dict | None = None,
    **kwargs,
) -> EGNN:
    """Build an :class:`EGNN` with one normalization at one place.

    Args:
      norm: a catalogue name (``"geo_norm"``, see ``geonorm_jax.norms.names()``), a ``Norm``,
        or None (vanilla EGNN).
      place: ``"coord"`` (positions after each layer), ``"update"`` (the aggregated
        coordinate update) or ``"feature"`` (``h`` after each layer).
      norm_kwargs: hyperparameters passed to the catalogue constructor (name only).
      **kwargs: other :class:`EGNN` attributes (``hidden``, ``num_layers``, ``remat``, ...).

    Example::

        model = make_egnn("geo_norm", norm_kwargs={"sigma": "system"}, num_layers=4)
    """
    if place not in PLACES:
        raise ValueError(f"place: expected one of {tuple(PLACES)}; received {place!r}")
    if isinstance(norm, str):
        from geonorm_jax.norms import catalog

        norm = catalog.make(norm, **(norm_kwargs or {}))
    elif norm_kwargs:
        raise ValueError("norm_kwargs: only used when norm is a catalogue name")
    return EGNN(**{_FIELD[place]: norm}, **kwargs)


def count_params(variables: Any) -> int:
    """Number of trainable scalars: leaves of ``variables["params"]`` (or of ``variables``)."""
    if isinstance(variables, dict) and "params" in variables:
        variables = variables["params"]
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables)))


