"""Models with pluggable normalization: the velocity EGNN (Satorras et al., 2021) for charged
N-body dynamics, and Allegro (Musaelian et al., 2023), SchNet (Schütt et al., 2018) and
GemNet-T (Gasteiger et al., 2021) for molecular energies and forces.

* :mod:`~geonorm_jax.models.registry`: one :class:`~.registry.ModelSpec` per model (task,
  published defaults, the shared knobs ``hidden``/``num_layers``/``cutoff``, the built-in
  normalization switch, norm places, ``init`` and ``predict``), read by the trainer, the CLI,
  the audit, the bench and the experiments; :func:`~.registry.register` adds a user's model;
* :mod:`~geonorm_jax.models.predict`: the standard ``init`` and ``predict`` of each task
  (energies and ``-dE/dx`` forces of potentials, positions of the N-body EGNN);
* :mod:`~geonorm_jax.models.egnn`: :class:`EGNN` and :func:`make_egnn`;
* :mod:`~geonorm_jax.models.egnn_layer`: :class:`EGCLVel`, one layer, configured by one
  :class:`LayerSettings`;
* :mod:`~geonorm_jax.models.egnn_kernels`: the pure per-edge kernels;
* :mod:`~geonorm_jax.models.edges`: edge lists, kNN/radius graphs (row-chunked for large N),
  input checks and the EGNN's edge inputs;
* :mod:`~geonorm_jax.models.placement`: where each kind of norm may go in a model
  (:data:`EGNN_PLACEMENT`; Allegro and SchNet declare theirs with it), the vocabulary shared
  with the trainer;
* :mod:`~geonorm_jax.models.sharding`: the node-sharded EGNN kernels and kNN graph (the layout
  and placement of arrays are in :mod:`geonorm_jax.parallel`);
* :mod:`~geonorm_jax.models.allegro`, :mod:`~geonorm_jax.models.schnet`: the molecular models
  on the flat padded batch of :mod:`~geonorm_jax.models.molecular_graph`, with the radial
  functions of :mod:`~geonorm_jax.models.radial` and the training-set statistics of
  :mod:`~geonorm_jax.models.target_norms`;
* :mod:`~geonorm_jax.models.gemnet`: GemNet-T (Gasteiger et al., 2021) on the same batch, with
  its bases (:mod:`~geonorm_jax.models.gemnet_basis`), triplets
  (:mod:`~geonorm_jax.models.gemnet_triplets`), blocks (:mod:`~geonorm_jax.models.gemnet_blocks`)
  and fitted scale factors (:mod:`~geonorm_jax.models.gemnet_scaling`);
* :mod:`~geonorm_jax.models.checks`: the data checks a model cannot make under ``jit``
  (coincident atoms, frames without an edge, GemNet-T's triplet budget), on the host.
"""

from geonorm_jax.models import checks, predict, radial, registry, target_norms
from geonorm_jax.models.allegro import ALLEGRO_PLACEMENT, ALLEGRO_SPEC, ALLEGRO_TUTORIAL, Allegro
from geonorm_jax.models.edges import fully_connected_edges, knn_graph
from geonorm_jax.models.egnn import (
    EGNN,
    EGNN_SPEC,
    GRAPHS,
    PLACES,
    EGCLVel,
    LayerSettings,
    count_params,
    make_egnn,
)
from geonorm_jax.models.gemnet import (
    GEMNET_PLACEMENT,
    GEMNET_SPEC,
    GEMNET_T_MD17,
    GEMNET_T_SMALL,
    GemNetT,
)
from geonorm_jax.models.gemnet_scaling import fit_scale_factors
from geonorm_jax.models.layers import TorchDense, merge_training
from geonorm_jax.models.molecular_graph import (
    MolecularGraph,
    batch_frames,
    energy_and_forces,
    flat_graph,
    radius_graph,
)
from geonorm_jax.models.placement import EGNN_PLACEMENT, NormPlace, NormPlacement
from geonorm_jax.models.registry import ModelSpec, register
from geonorm_jax.models.schnet import SCHNET_MD17, SCHNET_PLACEMENT, SCHNET_SPEC, SchNet

__all__ = [
    "ModelSpec",
    "register",
    "registry",
    "predict",
    "merge_training",
    "EGNN_SPEC",
    "ALLEGRO_SPEC",
    "SCHNET_SPEC",
    "GEMNET_SPEC",
    "EGNN",
    "EGCLVel",
    "LayerSettings",
    "GRAPHS",
    "PLACES",
    "EGNN_PLACEMENT",
    "NormPlace",
    "NormPlacement",
    "make_egnn",
    "count_params",
    "fully_connected_edges",
    "knn_graph",
    "TorchDense",
    "Allegro",
    "ALLEGRO_PLACEMENT",
    "ALLEGRO_TUTORIAL",
    "SchNet",
    "SCHNET_PLACEMENT",
    "SCHNET_MD17",
    "GemNetT",
    "GEMNET_PLACEMENT",
    "GEMNET_T_MD17",
    "GEMNET_T_SMALL",
    "fit_scale_factors",
    "MolecularGraph",
    "batch_frames",
    "energy_and_forces",
    "flat_graph",
    "radius_graph",
    "radial",
    "target_norms",
    "checks",
]
