r"""The velocity EGNN (Satorras et al., 2021, ``EGNN_vel``) in Flax, with pluggable normalization.

One layer (``E_GCL_vel``; Eq. 2 of the GeoNorm paper (Meng et al.) plus the velocity term), for
every edge ``(i, j)`` of the graph (``i`` receives, ``j`` sends) and every node ``i``:

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

* One layer is :class:`~geonorm_jax.models.egnn_layer.EGCLVel` (its parameters, configured by
  one :class:`~geonorm_jax.models.egnn_layer.LayerSettings`).
* The per-edge work (factorised first edge layer, ``phi_e``, ``phi_x``, the clamp, the sums
  over senders, edge chunking) is in :mod:`geonorm_jax.models.egnn_kernels`; edge lists,
  input checks and the edge inputs are in :mod:`geonorm_jax.models.edges`; where a norm may go
  is declared in :mod:`geonorm_jax.models.placement` (:data:`EGNN_PLACEMENT`).
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
  :mod:`geonorm_jax.parallel.nodes` for the layout and the collectives and
  :mod:`geonorm_jax.models.sharding` for the node-sharded kernels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.models import edges as edges_lib
from geonorm_jax.models import egnn_kernels as kernels
from geonorm_jax.models import execution_plan, registry
from geonorm_jax.models import sharding as sharding_lib
from geonorm_jax.models.egnn_layer import EGCLVel, LayerSettings
from geonorm_jax.models.layers import TorchDense, matmul_dtype_of, merge_training
from geonorm_jax.models.placement import EGNN_PLACEMENT, PLACES, NormPlacement
from geonorm_jax.norms.base import Norm
from geonorm_jax.parallel.nodes import NodeSharding

__all__ = [
    "EGNN_SPEC",
    "EGNN",
    "EGCLVel",
    "LayerSettings",
    "make_egnn",
    "count_params",
    "PLACES",
    "GRAPHS",
]

# The graph choices of the EGNN (and of the trainer's ``model.graph``): fully connected, the
# k nearest neighbours of the input positions (built inside the model), or an edge list given
# by the caller.
GRAPHS = ("dense", "knn", "edges")


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
      graph: one of :data:`GRAPHS`: ``"dense"`` (fully connected over the node mask),
        ``"knn"`` (edge list of the ``neighbors`` nearest real nodes of the *input* positions,
        :func:`~geonorm_jax.models.knn_graph`, built inside the model; ``O(N k)`` edges) or
        ``"edges"`` (edge list; then ``senders``/``receivers`` are required). Passing
        ``senders`` selects the given edge list in every case.
      neighbors: ``k`` of the ``"knn"`` graph (``k >= N - 1``: fully connected as an edge list).
      cutoff: optional radius of the ``"knn"`` graph (longer edges are masked), or None.
      edge_chunk: edges whose per-edge work runs together: ``"auto"`` (default: chosen at
        trace time by :func:`~geonorm_jax.models.execution_plan.plan_edges` from the backend,
        the device's free memory and the estimated bytes per edge; see :meth:`edge_plan`), an
        integer (chunks of that many edges, under ``jax.checkpoint``; dense graphs: whole
        graphs, or blocks of whole receiver rows for chunks smaller than a graph) or None
        (all edges at once). The result does not depend on it.
      memory_budget: bytes the ``"auto"`` plan may draw on (None: the device's free memory,
        ``GEONORM_JAX_MEMORY_BUDGET_GB``, or a stated default).
      matmul_dtype: mixed precision: the operands of every matrix product are cast to this
        dtype (e.g. ``jnp.bfloat16``) and the products accumulate in the computation dtype;
        positions, activations, the sums over senders, the norms and the loss stay in the
        computation dtype (that of ``x``). None (default): everything in the dtype of ``x``.
      param_dtype: dtype of the parameters (computation runs in the dtype of ``x``).
      node_sharding: a :class:`~geonorm_jax.parallel.NodeSharding` (mesh + axis) to
        split one large system over devices along the node axis (edge-list graph only;
        ValueError for the dense graph). Inputs are per-graph edges ``[batch, E]`` in the
        node-block layout (:func:`~geonorm_jax.parallel.partition_edges`, or a kNN
        graph with ``D | N``); ``D`` must divide ``N`` and ``E``
        (:func:`~geonorm_jax.parallel.shard_graph` pads and places everything). The
        per-edge work runs under ``jax.shard_map`` (one all-gather of ``[h W_2, x]`` per
        layer), the rest is GSPMD-partitioned; the output ``[batch, N, 3]`` is sharded over
        nodes. None (default): one device, unchanged.

    Where each kind of ``Norm`` may go, and where it goes by default, is declared in
    :data:`EGNN.placement` (:data:`geonorm_jax.models.placement.EGNN_PLACEMENT`).

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
    neighbors: int = 32
    cutoff: float | None = None
    edge_chunk: int | str | None = "auto"
    memory_budget: int | None = None
    matmul_dtype: Any = None
    param_dtype: Any = jnp.float32
    node_sharding: NodeSharding | None = None
    training: bool | None = None

    placement: ClassVar[NormPlacement] = EGNN_PLACEMENT

    def __post_init__(self):
        for place in self.placement.places:
            self.placement.check(getattr(self, place.field), place.name)
        if self.coords_agg not in ("mean", "sum"):
            raise ValueError(f"coords_agg: expected 'mean' or 'sum'; received {self.coords_agg!r}")
        if self.graph not in GRAPHS:
            raise ValueError(
                f"graph: expected 'dense', 'knn' or 'edges'; received {self.graph!r}"
            )
        if self.neighbors < 1:
            raise ValueError(f"neighbors: expected an integer >= 1; received {self.neighbors}")
        if self.node_sharding is not None and not isinstance(self.node_sharding, NodeSharding):
            raise ValueError(
                f"node_sharding: expected a NodeSharding or None; received "
                f"{type(self.node_sharding).__name__}"
            )
        execution_plan.check_edge_chunk(self.edge_chunk)
        matmul_dtype_of(self.matmul_dtype, "EGNN.matmul_dtype")
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
        training: bool | None = None,
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
            ``"batch_stats"`` collection is mutable); or set as the attribute (Flax's
            convention, :func:`~geonorm_jax.models.layers.merge_training`); default False.
          senders, receivers, edge_mask: edge list (see :mod:`geonorm_jax.models.edges`),
            per graph ``[batch, edges]`` or flat ``[edges]`` over ``batch * nodes``.
        """
        edges_lib.check_inputs(x, v, charges, mask)
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
        if self.graph == "knn" and not use_edges:  # indices only: no gradient flows through
            senders, receivers, edge_mask = edges_lib.knn_graph(
                x, self.neighbors, mask, self.cutoff
            )
            use_edges = True

        if self.node_sharding is not None:
            if not use_edges:
                raise ValueError(
                    "node_sharding: expected the edge-list graph (senders, receivers); the "
                    "dense graph cannot be sharded over nodes"
                )
            ns = self.node_sharding
            senders, receivers, emask = sharding_lib.prepare_sharded_edges(
                senders, receivers, edge_mask, batch, n, ns
            )
            x, v, charges = ns.constrain(x), ns.constrain(v), ns.constrain(charges)
            mask = None if mask is None else ns.constrain(mask)
            edge_attr, emask = sharding_lib.sharded_edge_inputs(
                x, charges, mask, senders, receivers, emask, ns
            )
        elif use_edges:  # flat [E]
            senders, receivers, edge_attr, emask = edges_lib.list_edge_inputs(
                x, charges, mask, senders, receivers, edge_mask
            )
        else:  # [B, N, N, 2], [B, N, N]
            edge_attr, emask = edges_lib.dense_edge_inputs(x, charges, mask)

        speed = geometry.safe_norm(v, axis=-1, keepdims=True)  # ||v_i||, [B, N, 1]
        h = TorchDense(self.hidden, name="embedding", param_dtype=self.param_dtype)(speed)

        training = merge_training(self.training, training)
        if not use_edges:
            num_edges = batch * n * n
        elif self.node_sharding is not None:  # per device
            num_edges = senders.size // self.node_sharding.num_shards
        else:
            num_edges = senders.shape[0]
        settings = self.layer_settings(training=training, dense=not use_edges,
                                       num_edges=num_edges, dtype=dtype,
                                       nodes=None if use_edges else n)
        layer_cls = nn.remat(EGCLVel) if self.remat else EGCLVel
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            h, x = layer_cls(
                settings=dataclasses.replace(
                    settings, apply_coord_norm=self.norm_last_layer or not last
                ),
                name=f"layer_{layer}",
            )(h, x, v, edge_attr, mask, emask, mu0, senders, receivers)
        return x

    def edge_plan(self, num_edges: int, dtype=jnp.float32,
                  nodes: int | None = None) -> execution_plan.EdgePlan:
        """The ``edge_chunk="auto"`` plan for ``num_edges`` edges per layer (dense graph:
        ``B N^2``, give ``nodes=N``: chunks of whole graphs or of whole receiver rows, see
        :func:`~geonorm_jax.models.egnn_kernels.dense_blocks`; edge list: ``E``;
        node-sharded: ``B E / D`` per device) computed in ``dtype``; for an explicit
        ``edge_chunk`` the plan states it (the chunks are then recomputed in full)."""
        kw = dict(layers=self.num_layers, remat=self.remat, budget_bytes=self.memory_budget,
                  granule=1 if nodes is None else nodes)
        plan = execution_plan.plan_edges(num_edges, self.hidden, dtype, **kw)
        if self.edge_chunk != execution_plan.AUTO:
            plan = plan._replace(chunk=self.edge_chunk, save_dots=False,
                                 reason=f"explicit edge_chunk={self.edge_chunk}")
        chunk = plan.chunk
        if chunk is not None and nodes:  # the dense kernels' blocks of receiver rows
            rows, blocks = kernels.dense_blocks(num_edges // nodes**2, nodes, chunk)
            chunk = rows * nodes * blocks
        unchunked = chunk is None or chunk >= num_edges
        return plan._replace(chunk=None if unchunked else chunk,
                             save_dots=plan.save_dots and not unchunked)

    def layer_settings(self, *, training: bool = False, dense: bool = True,
                       num_edges: int | None = None, dtype=jnp.float32,
                       nodes: int | None = None) -> LayerSettings:
        """The :class:`LayerSettings` of this model's layers (``apply_coord_norm=True``);
        with ``num_edges``, an ``edge_chunk="auto"`` is resolved by :meth:`edge_plan`."""
        edge_chunk, save_dots = self.edge_chunk, False
        if edge_chunk == execution_plan.AUTO and num_edges is not None:
            plan = self.edge_plan(num_edges, dtype, nodes)
            edge_chunk, save_dots = plan.chunk, plan.save_dots
        return LayerSettings(
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
            training=training,
            dense=dense,
            edge_chunk=edge_chunk,
            save_dots=save_dots,
            matmul_dtype=self.matmul_dtype,
            param_dtype=self.param_dtype,
            node_sharding=self.node_sharding,
        )


def make_egnn(
    norm: str | Norm | None = None,
    place: str | None = "coord",
    norm_kwargs: dict | None = None,
    **kwargs,
) -> EGNN:
    """Build an :class:`EGNN` with one normalization at one place.

    Args:
      norm: a catalogue name (``"geo_norm"``, see ``geonorm_jax.norms.names()``), a ``Norm``,
        or None (vanilla EGNN).
      place: ``"coord"`` (positions after each layer), ``"update"`` (the aggregated
        coordinate update) or ``"feature"`` (``h`` after each layer); None: the default
        place of the norm's kind (:data:`EGNN.placement`).
      norm_kwargs: hyperparameters passed to the catalogue constructor (name only).
      **kwargs: other :class:`EGNN` attributes (``hidden``, ``num_layers``, ``remat``, ...).

    Example::

        model = make_egnn("geo_norm", norm_kwargs={"sigma": "system"}, num_layers=4)
    """
    if place is not None:
        EGNN.placement.place(place)  # ValueError naming the places
    if isinstance(norm, str):
        from geonorm_jax.norms import catalog

        norm = catalog.make(norm, **(norm_kwargs or {}))
    elif norm_kwargs:
        raise ValueError("norm_kwargs: only used when norm is a catalogue name")
    if place is None:
        if norm is None:
            return EGNN(**kwargs)
        place = EGNN.placement.default_place(norm.kind, norm.name)
    return EGNN(**{EGNN.placement.place(place).field: norm}, **kwargs)


def count_params(variables: Any) -> int:
    """Number of trainable scalars: leaves of ``variables["params"]`` (or of ``variables``)."""
    if isinstance(variables, dict) and "params" in variables:
        variables = variables["params"]
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables)))


EGNN_SPEC = registry.register(registry.ModelSpec(
    name="egnn",
    task="nbody",
    module=EGNN,
    defaults=dict(hidden=64, num_layers=4),
    sizes={"tiny": dict(hidden=16, num_layers=2)},
    citation="Satorras, Hoogeboom and Welling, E(n) Equivariant Graph Neural Networks, ICML "
             "2021 (velocity variant EGNN_vel, N-body: 4 layers of width 64; "
             "vgsatorras/egnn main_nbody.py)",
    description="velocity EGNN: positions of charged particles after a horizon (N-body)",
))
