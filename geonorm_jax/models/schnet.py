r"""SchNet (Schütt et al., NeurIPS 2017; J. Chem. Phys. 148, 241722, 2018) on the flat batch.

Equations (``i`` the centre atom, ``j`` a neighbour, ``r_ij = |x_j - x_i|``)::

    h_i^0       = Embed(Z_i)                                              [N, F]
    W_ij^t      = Dense(ssp(Dense(e(r_ij)))) * f_cut(r_ij)                 [E, F]  filter network
    c_i^t       = sum_j m_ij  (Dense_nobias(h^t)_j * W_ij^t)  / n_i^p     [N, F]  cf-convolution
    h_i^{t+1}   = h_i^t + Dense(ssp(Dense(c_i^t)))                        [N, F]  interaction
    e_i         = Dense_1(act_out(Dense_{F/2}(h_i^T)))                    [N]
    E_g         = sum_{i in g} (sigma e_i + mu_{Z_i})                     [G]

``e(r)`` is the Gaussian basis and ``f_cut`` the cosine cutoff (:mod:`.radial`), ``ssp`` the
shifted softplus, ``act_out`` the readout activation (``ssp`` unless ``readout_activation``
says otherwise), ``m_ij`` the edge mask. The sum over ``j`` is a ``segment_sum`` over
``receivers``; the final sum over atoms a ``segment_sum`` over ``graph_ids``.

Conventions. Each default names its source; :data:`SCHNETPACK` (the spec's size
``"schnetpack"``) switches all of them to schnetpack 2.x's (``schnetpack.representation.
SchNet``, ``nn.GaussianRBF``, ``atomistic.Atomwise``, checked against schnetpack 2.0.4):

* neighbour normalization: ``neighbor_normalization=True`` divides by ``n_i``, the survey's
  Table 1 row "SchNet" (``A / N_v``; Aalto, Lubana, Tanaka). schnetpack 2 has no such
  option and sums over the neighbours (``scatter_add``), as the SchNet papers write the
  convolution (``sum_j x_j o W(r_i - r_j)``); schnetpack 0.3's ``normalize_filter`` was off
  by default.
* readout activation: ``readout_activation=None`` is ``activation``, the shifted softplus of
  the SchNet papers' output network (atom-wise, ssp, atom-wise); schnetpack 2's ``Atomwise``
  defaults to ``F.silu`` (``"silu"``).
* Gaussian centres: ``rbf_float32_grid=False`` places ``mu_k`` and ``gamma`` exactly in the
  positions' dtype; schnetpack computes them as float32 buffers (``torch.linspace``,
  ``torch.FloatTensor`` widths) that ``model.double()`` casts to float64, so in float64 its
  centres sit up to about 2e-7 Å off the exact grid (``True`` reproduces them bit for bit).
* Gaussian width: :data:`SCHNET_MD17` has ``gamma = 10 Å^-2`` (SchNet 2018, centres every
  0.1 Å); schnetpack's width equals the spacing, ``gamma = 1 / (2 Delta^2)``
  (``rbf_gamma=None``).
* species table: ``Z <= 118`` here; schnetpack's ``max_z = 100`` rows (``Z <= 99``).

SchNet's normalization (the survey's ``A / N_v``): with ``neighbor_normalization=True`` the
convolution is divided by each atom's number of neighbours ``n_i = sum_j m_ij`` (clamped
below at 1), a mean instead of a sum over neighbours; ``False`` keeps the plain sum of the
SchNet papers and schnetpack 2. The default is the survey's because this package studies
normalization layers (the registry's ``builtin_norm`` switch turns it off). The
per-species energy scale and shift (``species_scale``, ``species_shift``) are optional, as in
schnetpack's atom-wise output with a mean and standard deviation; fit them with
:class:`~geonorm_jax.models.target_norms.EnergyNormalization`.

With :data:`SCHNETPACK` over :data:`SCHNET_MD17` (``F = 64``, ``T = 3``, 51 Gaussians on
``[0, 5]`` Å) and weights transferred from schnetpack's ``NeuralNetworkPotential(SchNet(64,
3, GaussianRBF(51, 5.0), CosineCutoff(5.0)), Atomwise(64))`` (torch ``Linear`` weights
``[out, in]`` become Flax kernels ``[in, out]``), the energies and forces agree with
schnetpack 2.0.4's in float64 to rounding (ethanol, two frames: energies to ``3e-16``
relative, forces to ``3e-15`` of the largest component; ``tests/test_schnet.py``, where
schnetpack is installed); with the exact Gaussian grid instead they differ by ``5e-8`` and
``1.5e-6``.

Normalization places (:data:`SCHNET_PLACEMENT`; any ``features`` norm of the catalogue):
``feature_norm`` on ``h`` after each interaction, ``aggregate_norm`` on the convolution
``c`` before the atom-wise layers (it receives ``num_neighbors [G, A]`` as context, so the
catalogue's ``schnet_neighbor_norm`` there equals ``neighbor_normalization=True``). Norms
see atom features as ``[G, A, F]`` with the atom mask ``[G, A]`` when the batch is block
padded (:mod:`.molecular_graph`), else as ``[1, N, F]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.models import registry
from geonorm_jax.models.layers import matmul_dtype_of, merge_training, mixed_dot_general
from geonorm_jax.models.molecular_graph import (
    MolecularGraph,
    apply_block_norm,
    edge_vectors,
    graph_energies,
    species_scale_shift,
)
from geonorm_jax.models.placement import NormPlace, NormPlacement
from geonorm_jax.models.radial import cosine_cutoff, gaussian_rbf, shifted_softplus
from geonorm_jax.norms.base import Norm

__all__ = ["SCHNET_SPEC", "SchNet", "SCHNET_PLACEMENT", "SCHNET_MD17", "SCHNETPACK",
           "READOUT_ACTIVATIONS", "schnetpack_rbf_grid"]

# SchNet (2018) for MD17 molecules: F = 64, T = 3 interactions, Gaussians every 0.1 Å with
# gamma = 10 Å^-2, here within schnetpack's 5 Å cosine cutoff (51 centres on [0, 5] Å).
SCHNET_MD17 = dict(features=64, num_interactions=3, num_rbf=51, rbf_gamma=10.0, cutoff=5.0)

# schnetpack 2.x's conventions (see the module docstring): over SCHNET_MD17 this is
# NeuralNetworkPotential(SchNet(64, 3, GaussianRBF(51, 5.0), CosineCutoff(5.0)), Atomwise(64))
# with every other argument at schnetpack's default.
SCHNETPACK = dict(neighbor_normalization=False, readout_activation="silu", rbf_gamma=None,
                  rbf_float32_grid=True, max_atomic_number=99)

READOUT_ACTIVATIONS: dict[str, Callable] = {"ssp": shifted_softplus, "silu": jax.nn.silu}
"""Names accepted by ``SchNet.readout_activation``: ``"ssp"`` (the SchNet papers),
``"silu"`` (``x sigmoid(x)``, schnetpack 2's ``Atomwise`` default)."""


def schnetpack_rbf_grid(start: float, stop: float, num_basis: int) -> tuple[np.ndarray, float]:
    """schnetpack's Gaussian centres ``mu [K]`` and width, as its float32 buffers hold them.

    ``GaussianRBF`` builds ``torch.linspace(start, stop, K)`` in float32 (ATen's CPU kernel:
    ``step = (stop - start) / (K - 1)`` in float32, then ``start + k step`` for ``k < K / 2``
    and ``stop - (K - 1 - k) step`` above, each a fused multiply-add rounded once to
    float32) and the width ``|mu_1 - mu_0|`` in float32. Returned as
    float32 values (``gamma = 1 / (2 width^2)`` is then formed in the model's dtype, as
    schnetpack does after ``model.double()``).
    """
    if not (isinstance(num_basis, int) and num_basis >= 2):
        raise ValueError(f"schnetpack_rbf_grid: expected num_basis >= 2; received {num_basis!r}")
    if not stop > start:
        raise ValueError(f"schnetpack_rbf_grid: expected stop > start; received {start} and "
                         f"{stop}")
    f32 = np.float32
    k = np.arange(num_basis)
    step = np.float64((f32(stop) - f32(start)) / f32(num_basis - 1))
    # a fused multiply-add, as ATen's vectorized kernel: exact in float64, one float32 rounding
    low = np.float64(f32(start)) + step * k
    high = np.float64(f32(stop)) - step * (num_basis - 1 - k)
    mu = np.where(k < num_basis // 2, low, high).astype(f32)
    return mu, float(np.abs(mu[1] - mu[0]))


SCHNET_PLACEMENT = NormPlacement(
    "SchNet",
    (
        NormPlace("feature", ("features",), "atom features h [G, A, F] after each interaction"),
        NormPlace(
            "aggregate",
            ("features",),
            "the continuous-filter convolution c [G, A, F] (context num_neighbors [G, A])",
        ),
    ),
    defaults=(("features", "feature"),),
)


class SchNet(nn.Module):
    """SchNet energy model: :class:`MolecularGraph` -> molecular energies ``[G]``.

    Attributes:
      features: ``F``, width of atom features and filters (schnetpack: 128).
      num_interactions: ``T`` (schnetpack: 3 to 6).
      num_rbf: Gaussians with centres spread over ``[0, cutoff]``.
      rbf_gamma: their width parameter (Å^-2); None: ``1 / (2 spacing^2)``, schnetpack's.
      rbf_float32_grid: centres and width as schnetpack's float32 buffers
        (:func:`schnetpack_rbf_grid`; needs ``rbf_gamma=None``); False: exact in the
        positions' dtype.
      cutoff: ``r_c`` (Å) of the cosine cutoff; edges beyond it are dropped.
      neighbor_normalization: divide the convolution by the neighbour count (the survey's
        SchNet row; False: the sum of the SchNet papers and schnetpack 2; see module).
      species_scale: ``sigma``: a float, a tuple indexed by atomic number, or None (1).
      species_shift: ``mu_Z``: a tuple indexed by atomic number, or None (0).
      max_atomic_number: size of the embedding table minus one.
      feature_norm, aggregate_norm: ``Norm`` of kind ``"features"`` or None.
      training: passed to the norms; also a call argument (Flax's convention,
        :func:`~geonorm_jax.models.layers.merge_training`); default False (batch statistics).
      activation: ``ssp`` by default (the SchNet papers and schnetpack).
      readout_activation: the output network's activation: None (``activation``, the SchNet
        papers), a name in :data:`READOUT_ACTIVATIONS` (``"silu"``: schnetpack 2's
        ``Atomwise``) or a callable.
      matmul_dtype: mixed precision (:mod:`~geonorm_jax.models.layers`): the operands of the
        dense layers' products in this dtype (e.g. ``"bfloat16"``), accumulated and returned
        in the positions' dtype; None (default): all in the positions' dtype.
    """

    features: int = 64
    num_interactions: int = 3
    num_rbf: int = 25
    rbf_gamma: float | None = None
    cutoff: float = 5.0
    neighbor_normalization: bool = True
    species_scale: float | tuple[float, ...] | None = None
    species_shift: tuple[float, ...] | None = None
    max_atomic_number: int = 118
    feature_norm: Norm | None = None
    aggregate_norm: Norm | None = None
    training: bool | None = None
    activation: Callable = shifted_softplus
    readout_activation: str | Callable | None = None
    rbf_float32_grid: bool = False
    matmul_dtype: Any = None

    def __post_init__(self):
        SCHNET_PLACEMENT.check(self.feature_norm, "feature")
        SCHNET_PLACEMENT.check(self.aggregate_norm, "aggregate")
        if not (isinstance(self.features, int) and self.features >= 2):
            raise ValueError(f"SchNet.features: expected an int >= 2; received {self.features!r}")
        if not self.cutoff > 0:
            raise ValueError(f"SchNet.cutoff: expected > 0 (Å); received {self.cutoff!r}")
        ra = self.readout_activation
        if isinstance(ra, str) and ra not in READOUT_ACTIVATIONS:
            raise ValueError(f"SchNet.readout_activation: expected None, a callable or one of "
                             f"{sorted(READOUT_ACTIVATIONS)}; received {ra!r}")
        if not (ra is None or isinstance(ra, str) or callable(ra)):
            raise ValueError(f"SchNet.readout_activation: expected None, a callable or one of "
                             f"{sorted(READOUT_ACTIVATIONS)}; received {ra!r}")
        matmul_dtype_of(self.matmul_dtype, "SchNet.matmul_dtype")
        if self.rbf_float32_grid and self.rbf_gamma is not None:
            raise ValueError("SchNet.rbf_float32_grid: schnetpack's grid sets the width from "
                             f"the spacing; expected rbf_gamma=None, received {self.rbf_gamma!r}")
        super().__post_init__()

    @nn.compact
    def atomic_energies(self, graph: MolecularGraph,
                        training: bool | None = None) -> jax.Array:
        """Scaled and shifted atomic energies ``E_i [N]`` (0 at padded atoms).

        ``model.apply(variables, graph, method="atomic_energies")``.
        """
        graph.validate()
        training = merge_training(self.training, training)
        dtype = graph.positions.dtype
        act = self.activation
        dense = functools.partial(nn.Dense, dot_general=mixed_dot_general(self.matmul_dtype))
        n, f = graph.num_atoms, self.features
        vec = edge_vectors(graph.positions, graph.senders, graph.receivers)  # [E, 3]
        d2 = jnp.sum(jnp.square(vec), axis=-1)
        emask = graph.edge_mask & (d2 < self.cutoff**2) & (graph.senders != graph.receivers)
        # coincident atoms (d = 0, a real edge): r = 0 with gradient 0 by selection, where
        # sqrt'(0) = inf would give NaN forces; padded edges: any positive distance. Elsewhere
        # the same bits as sqrt(d2).
        coincident = emask & (d2 == 0)
        r = jnp.where(coincident, 0.0, jnp.sqrt(jnp.where(emask & ~coincident, d2, 1.0)))
        if self.rbf_float32_grid:  # schnetpack's float32 buffers, cast to the model's dtype
            mu, width = schnetpack_rbf_grid(0.0, self.cutoff, self.num_rbf)
            coeff = -0.5 / jnp.square(jnp.asarray(width, dtype))
            rbf = jnp.exp(coeff * jnp.square(r[:, None] - jnp.asarray(mu, dtype)))  # [E, K]
        else:
            rbf = gaussian_rbf(r, 0.0, self.cutoff, self.num_rbf, self.rbf_gamma)  # [E, K]
        fcut = (cosine_cutoff(r, self.cutoff) * emask).astype(dtype)[:, None]  # [E, 1]
        counts = jax.ops.segment_sum(emask.astype(dtype), graph.receivers, num_segments=n)

        h = nn.Embed(self.max_atomic_number + 1, f, name="embedding")(graph.species)
        h = h.astype(dtype)
        for t in range(self.num_interactions):
            filt = dense(f, name=f"filter_{t}_0")(rbf)
            filt = dense(f, name=f"filter_{t}_1")(act(filt)) * fcut  # [E, F]
            x = dense(f, use_bias=False, name=f"in2f_{t}")(h)  # [N, F]
            conv = jax.ops.segment_sum(x[graph.senders] * filt, graph.receivers, num_segments=n)
            if self.neighbor_normalization:
                conv = conv / jnp.maximum(counts, 1.0)[:, None]
            if self.aggregate_norm is not None:
                conv = apply_block_norm(
                    self.aggregate_norm, conv, graph.atom_mask, graph.atoms_per_graph,
                    name=f"aggregate_norm_{t}", training=training, num_neighbors=counts,
                )
            v = dense(f, name=f"f2out_{t}")(conv)
            h = h + dense(f, name=f"dense_{t}")(act(v))
            if self.feature_norm is not None:
                h = apply_block_norm(
                    self.feature_norm, h, graph.atom_mask, graph.atoms_per_graph,
                    name=f"feature_norm_{t}", training=training,
                )
        ra = self.readout_activation
        out_act = act if ra is None else READOUT_ACTIVATIONS[ra] if isinstance(ra, str) else ra
        e = dense(1, name="out_1")(out_act(dense(f // 2, name="out_0")(h)))[:, 0]
        e = species_scale_shift(e, graph.species, self.species_scale, self.species_shift)
        return jnp.where(graph.atom_mask, e, 0.0)

    def __call__(self, graph: MolecularGraph, training: bool | None = None) -> jax.Array:
        """Molecular energies ``[G]``: ``segment_sum`` of :meth:`atomic_energies` over
        ``graph_ids``; ``training`` as the attribute (:func:`~.layers.merge_training`)."""
        return graph_energies(self.atomic_energies(graph, training), graph)


SCHNET_SPEC = registry.register(registry.ModelSpec(
    name="schnet",
    task="molecules",
    placement=SCHNET_PLACEMENT,
    module=SchNet,
    defaults=SCHNET_MD17,
    knobs={"hidden": ("features",), "num_layers": ("num_interactions",)},
    builtin_norm={True: {"neighbor_normalization": True},
                  False: {"neighbor_normalization": False}},
    # "schnetpack": schnetpack 2.x's conventions (SCHNETPACK; its outputs from transferred
    # weights in float64); "reference": the same, the size the peer benchmark applies. These
    # sizes fix the sum over neighbours (resolve(size="schnetpack"); with builtin_norm=True
    # it is an error naming neighbor_normalization)
    sizes={"tiny": dict(features=8, num_interactions=1, num_rbf=8),
           "schnetpack": SCHNETPACK, "reference": SCHNETPACK},
    citation="Schütt et al., SchNet - A deep learning architecture for molecules and "
             "materials, J. Chem. Phys. 148, 241722 (2018); MD17 setting F = 64, T = 3",
    description="SchNet: continuous-filter convolutions on interatomic distances (energies, "
                "forces)",
))
