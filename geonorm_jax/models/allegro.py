r"""Allegro (Musaelian et al., Nat. Commun. 14, 579, 2023, "Learning local equivariant
representations for large-scale atomistic dynamics") on e3nn-jax and the flat batch.

Allegro is strictly local and edge-based: every quantity lives on an ordered pair ``(i, j)``
of the centre ``i`` (``receivers``) and a neighbour ``j`` (``senders``) within ``r_c``, and
no message passes between atoms beyond ``r_c``. Shapes: ``E`` edges, ``D`` latent width,
``C`` tensor channels, ``Y`` the spherical-harmonic irreps (``0e + 1o + 2e`` for
``l_max = 2``)::

    u_ij     = u(r_ij)                                  polynomial envelope, p = 6     [E]
    x_ij^0   = MLP_2b(Emb(Z_i) || Emb(Z_j) || B(r_ij) u_ij) * u_ij                  [E, D]
    V_ij^0   = w_ij^0 ⊙ Y(r̂_ij),  w^0 = Lin(x^0)          weight per channel, per l  [E, C, Y]
    layer L = 1..L_max:
      w_ij^L   = Lin(x_ij^{L-1})                                                  [E, C, n_l]
      Ω_i^L    = ν Σ_{k in N(i)} w_ik^L ⊙ Y(r̂_ik)       environment embedding       [N, C, Y]
      V_ij^L   = Lin(V_ij^{L-1} ⊗ Ω_i^L)               channel-wise TP, paths mixed  [E, C, irreps]
      s_ij^L   = scalars (0e) of V_ij^L                                             [E, C]
      x_ij^L   = (x^{L-1} + α_L MLP_L(x^{L-1} || s^L) u_ij) / sqrt(1 + α_L^2)        [E, D]
    ε_ij     = MLP_out(x_ij^{L_max}) u_ij                                             [E]
    E_i      = σ_{Z_i} ν Σ_j ε_ij + μ_{Z_i},    E_g = Σ_{i in g} E_i                 [N], [G]

``B`` is the Bessel basis, ``Y`` the ``component``-normalized spherical harmonics of the unit
vector ``r̂_ij = (x_j - x_i) / r_ij``, ``α_L = sigmoid(a_L)`` a learned ratio (``a_L = 0``
at initialization: ``α = 1/2``), the paper's variance-preserving residual latent update
(``latent_resnet=False`` replaces it by ``x^L = MLP_L(...) u``). The last layer's tensor
product keeps only scalars. MLPs have no biases and SiLU activations, as in the authors'
code, so every edge quantity vanishes with ``u`` at the cutoff. A norm's output does not
(its statistics shift and rescale), so the output of a latent or tensor norm is multiplied
by ``u_ij`` again, and ``ε_ij`` too: edges at or beyond ``r_c`` (and padded edges) then
contribute nothing anywhere, and energies stay smooth as atoms cross the cutoff. The
environment sum runs over the edges of the edge mask only.

The normalizations of the survey's Section 4, each one argument:

(a) ``env_normalization``: ``ν = 1 / sqrt(N̄)`` (``"sqrt"``, Allegro and NequIP),
    ``ν = 1 / N̄`` (``"mean"``, MACE) or ``ν = 1`` (``"none"``), on the environment sums
    ``Ω`` and the edge-energy sum, with ``N̄ = avg_num_neighbors`` estimated on the
    training set (:func:`~geonorm_jax.models.target_norms.avg_num_neighbors`).
(b) ``species_scale`` / ``species_shift``: ``σ`` (the training force RMS) and ``μ_Z``
    (least squares of the training energies on the species counts); None switches off
    (:class:`~geonorm_jax.models.target_norms.EnergyNormalization`).
(c) force-RMS scaling of the targets is a data-side transform:
    :meth:`~geonorm_jax.models.target_norms.EnergyNormalization.normalize_targets`.

Normalization places (:data:`ALLEGRO_PLACEMENT`): ``latent_norm`` (kind ``features``) on
``x^L [E, D]`` after each layer, ``tensor_norm`` (kind ``vectors``) on the tensor track
``V^L`` after each layer but the last (which holds only scalars), as an IrrepsArray
``[G, K, C x irreps]``. Norms see edges as the nodes of a graph: ``[G, K, ...]`` with the
edge mask ``[G, K]`` for a block-padded batch (:mod:`.molecular_graph`), else ``[1, E, ...]``.
"""

from __future__ import annotations

from typing import Any

import e3nn_jax as e3nn
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
from geonorm_jax.models.radial import bessel_basis, polynomial_envelope
from geonorm_jax.norms.base import Norm

__all__ = [
    "ALLEGRO_SPEC",
    "Allegro",
    "ALLEGRO_PLACEMENT",
    "ALLEGRO_TUTORIAL",
    "ENV_NORMALIZATIONS",
    "env_factor",
]

# The hyperparameters of the authors' tutorial configuration (mir-group/allegro,
# configs/tutorial.yaml): r_c = 5 Å, 8 Bessels, p = 6, l_max = 1 with both parities
# (o3_full), 2 layers, 64 scalar and 32 tensor features, two-body MLP of 2 hidden layers of
# 64, latent MLPs of 2 hidden layers of 128, readout MLP of 1 hidden layer of 32. The
# tutorial's 32-wide two-body embedding is the species-embedding width here.
ALLEGRO_TUTORIAL = dict(
    cutoff=5.0,
    num_bessel=8,
    envelope_p=6,
    l_max=1,
    tensor_irreps="0e+0o+1e+1o",
    num_layers=2,
    latent_dim=64,
    num_channels=32,
    embed_dim=32,
    two_body_hidden=(64, 64),
    latent_hidden=(128, 128),
    edge_energy_hidden=(32,),
)

ALLEGRO_PLACEMENT = NormPlacement(
    "Allegro",
    (
        NormPlace("latent", ("features",), "the scalar edge latents x_ij [G, K, D] per layer"),
        NormPlace(
            "tensor",
            ("vectors",),
            "the tensor-track edge features V_ij, IrrepsArray [G, K, C x irreps], per layer",
        ),
    ),
    defaults=(("features", "latent"), ("vectors", "tensor")),
)

# name -> power p of the factor N̄^-p on the environment and edge-energy sums
ENV_NORMALIZATIONS = {"sqrt": 0.5, "mean": 1.0, "none": 0.0}


def env_factor(env_normalization: str, avg_num_neighbors: float | None) -> float:
    """``ν = N̄^{-p}``: ``p = 1/2`` for ``"sqrt"``, 1 for ``"mean"``, 0 for ``"none"``."""
    if env_normalization not in ENV_NORMALIZATIONS:
        raise ValueError(
            f"env_normalization: expected one of {tuple(ENV_NORMALIZATIONS)}; "
            f"received {env_normalization!r}"
        )
    power = ENV_NORMALIZATIONS[env_normalization]
    if power == 0.0:
        return 1.0
    if avg_num_neighbors is None or not avg_num_neighbors > 0:
        raise ValueError(
            f"avg_num_neighbors: expected N̄ > 0 (estimate it with "
            f"target_norms.avg_num_neighbors) for env_normalization={env_normalization!r}; "
            f"received {avg_num_neighbors!r}"
        )
    return float(avg_num_neighbors) ** (-power)


class _MLP(nn.Module):
    """Bias-free MLP with SiLU between layers (none after the last): ``[..., in] -> [..., out]``
    (products' operands in ``matmul_dtype``, :func:`~.layers.mixed_dot_general`)."""

    widths: tuple[int, ...]
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for k, w in enumerate(self.widths):
            x = nn.Dense(w, use_bias=False, name=f"dense_{k}",
                         dot_general=mixed_dot_general(self.matmul_dtype))(x)
            if k < len(self.widths) - 1:
                x = jax.nn.silu(x)
        return x


def _weighted_irreps(w: jax.Array, y: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    """``w [E, C, n_irreps]`` times ``y [E, irreps]`` irrep-wise -> ``[E, C, irreps]``."""
    idx = np.repeat(np.arange(len(y.irreps)), [mul_ir.ir.dim for mul_ir in y.irreps])
    return e3nn.IrrepsArray(y.irreps, w[..., idx] * y.array[:, None, :])


class Allegro(nn.Module):
    """Allegro energy model: :class:`MolecularGraph` -> molecular energies ``[G]``.

    Attributes:
      num_layers: ``L_max`` tensor-product layers (>= 1).
      latent_dim: ``D``, width of the scalar latent.
      num_channels: ``C``, tensor-track channels.
      l_max: largest ``l`` of the spherical harmonics ``Y``.
      tensor_irreps: irreps allowed on the tensor track (one copy per channel), e.g.
        ``"0e+1o+2e"`` or ``"0e+0o+1o+1e+2e+2o"``; ``l <= 2 l_max``.
      num_bessel: Bessel functions in the radial basis.
      cutoff: ``r_c`` (Å); edges beyond it are dropped.
      envelope_p: ``p`` of the polynomial envelope (Allegro: 6).
      embed_dim: width of the species embedding.
      two_body_hidden, latent_hidden, edge_energy_hidden: hidden widths of ``MLP_2b``,
        ``MLP_L`` and ``MLP_out``.
      latent_resnet: the residual latent update (see the module docstring).
      env_normalization, avg_num_neighbors: normalization (a).
      species_scale, species_shift: normalization (b) (None: off).
      max_atomic_number: embedding table size minus one.
      latent_norm, tensor_norm: ``Norm`` (kinds ``features`` / ``vectors``) or None.
      training: passed to the norms; also a call argument (Flax's convention,
        :func:`~geonorm_jax.models.layers.merge_training`); default False.
      matmul_dtype: mixed precision (:mod:`~geonorm_jax.models.layers`): the operands of the
        dense layers' and MLPs' products in this dtype (e.g. ``"bfloat16"``), accumulated and
        returned in the positions' dtype; None (default): all in the positions' dtype. The
        e3nn tensor products and ``e3nn.flax.Linear`` layers stay in the positions' dtype.
    """

    num_layers: int = 2
    latent_dim: int = 32
    num_channels: int = 8
    l_max: int = 2
    tensor_irreps: str = "0e+1o+2e"
    num_bessel: int = 8
    cutoff: float = 4.0
    envelope_p: int = 6
    embed_dim: int = 8
    two_body_hidden: tuple[int, ...] = (32,)
    latent_hidden: tuple[int, ...] = (32,)
    edge_energy_hidden: tuple[int, ...] = (16,)
    latent_resnet: bool = True
    env_normalization: str = "sqrt"
    avg_num_neighbors: float | None = None
    species_scale: float | tuple[float, ...] | None = None
    species_shift: tuple[float, ...] | None = None
    max_atomic_number: int = 118
    latent_norm: Norm | None = None
    tensor_norm: Norm | None = None
    training: bool | None = None
    matmul_dtype: Any = None

    def __post_init__(self):
        ALLEGRO_PLACEMENT.check(self.latent_norm, "latent")
        ALLEGRO_PLACEMENT.check(self.tensor_norm, "tensor")
        env_factor(self.env_normalization, self.avg_num_neighbors)
        matmul_dtype_of(self.matmul_dtype, "Allegro.matmul_dtype")
        if not (isinstance(self.num_layers, int) and self.num_layers >= 1):
            raise ValueError(f"Allegro.num_layers: expected >= 1; received {self.num_layers!r}")
        if not self.cutoff > 0:
            raise ValueError(f"Allegro.cutoff: expected > 0 (Å); received {self.cutoff!r}")
        irreps = e3nn.Irreps(self.tensor_irreps)
        if "0e" not in irreps or any(mul != 1 for mul, _ in irreps):
            raise ValueError(
                f"Allegro.tensor_irreps: expected irreps with multiplicity 1 that include 0e; "
                f"received {self.tensor_irreps!r}"
            )
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
        n, c = graph.num_atoms, self.num_channels
        nu = env_factor(self.env_normalization, self.avg_num_neighbors)
        per_edge = graph.edges_per_graph

        vec = edge_vectors(graph.positions, graph.senders, graph.receivers)  # [E, 3]
        d2 = jnp.sum(jnp.square(vec), axis=-1)
        # an edge of zero length (coincident atoms) has no direction: it is left out like a
        # padded edge, so values and gradients stay finite (models.checks.check_frames
        # reports such data before training)
        emask = (graph.edge_mask & (d2 < self.cutoff**2) & (graph.senders != graph.receivers)
                 & (d2 > 0))
        safe_vec = jnp.where(emask[:, None], vec, jnp.asarray([0.0, 0.0, 1.0], dtype))
        r = jnp.sqrt(jnp.sum(jnp.square(safe_vec), axis=-1))  # [E], > 0 everywhere
        u = polynomial_envelope(r, self.cutoff, self.envelope_p) * emask  # [E]
        sh = e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(self.l_max), safe_vec, normalize=True,
            normalization="component",
        )  # [E, Y]
        n_sh = len(sh.irreps)

        # two-body latent
        emb = nn.Embed(self.max_atomic_number + 1, self.embed_dim, name="species_embedding")
        z_emb = emb(graph.species).astype(dtype)  # [N, embed]
        radial = bessel_basis(r, self.cutoff, self.num_bessel) * u[:, None]  # [E, nb]
        two_body_in = jnp.concatenate(
            [z_emb[graph.receivers], z_emb[graph.senders], radial], axis=-1
        )
        md = self.matmul_dtype
        x = _MLP((*self.two_body_hidden, self.latent_dim), md, name="two_body_mlp")(two_body_in)
        x = x * u[:, None]  # [E, D]

        w0 = nn.Dense(c * n_sh, use_bias=False, name="initial_tensor_weights",
                      dot_general=mixed_dot_general(md))(x)
        v = _weighted_irreps(w0.reshape(-1, c, n_sh), sh)  # [E, C, Y]

        allowed = e3nn.Irreps(self.tensor_irreps)
        resnet = self.param(
            "latent_resnet_logits", nn.initializers.zeros, (self.num_layers,), jnp.float32
        )  # float32 like the Dense and e3nn Linear parameters
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            w = nn.Dense(c * n_sh, use_bias=False, name=f"env_weights_{layer}",
                         dot_general=mixed_dot_general(md))(x)
            wy = _weighted_irreps(w.reshape(-1, c, n_sh), sh)  # [E, C, Y]
            wy = jnp.where(emask[:, None, None], wy.array, 0.0)  # neighbours within r_c only
            env = jax.ops.segment_sum(wy, graph.receivers, num_segments=n) * nu
            self.sow("intermediates", f"environment_{layer}", env)  # [N, C, dim Y]
            env_i = e3nn.IrrepsArray(sh.irreps, env[graph.receivers])  # [E, C, Y]
            tp = e3nn.tensor_product(
                v, env_i, filter_ir_out=e3nn.Irreps("0e") if last else allowed
            )  # [E, C, paths]
            out_irreps = e3nn.Irreps([(c, ir) for _, ir in tp.irreps.regroup()])
            v = e3nn.flax.Linear(out_irreps, name=f"tensor_linear_{layer}")(tp.axis_to_mul())
            v = v.mul_to_axis(c)  # [E, C, irreps]
            scalars = v.filter(keep="0e").array.reshape(v.shape[0], -1)  # [E, C * n_0e]

            new = _MLP((*self.latent_hidden, self.latent_dim), md, name=f"latent_mlp_{layer}")(
                jnp.concatenate([x, scalars.astype(dtype)], axis=-1)
            )
            new = new * u[:, None]
            if self.latent_resnet:
                alpha = jax.nn.sigmoid(resnet[layer]).astype(dtype)
                x = (x + alpha * new) / jnp.sqrt(1.0 + alpha**2)
            else:
                x = new
            if self.latent_norm is not None:  # re-cut: x_ij stays 0 beyond r_c, smooth at r_c
                x = apply_block_norm(
                    self.latent_norm, x, emask, per_edge,
                    name=f"latent_norm_{layer}", training=training,
                ) * u[:, None]
            if self.tensor_norm is not None and not last:
                vb = apply_block_norm(
                    self.tensor_norm, v.axis_to_mul(), emask, per_edge,
                    name=f"tensor_norm_{layer}", training=training,
                )
                v = vb.mul_to_axis(c) * u[:, None, None]

        eps = _MLP((*self.edge_energy_hidden, 1), md, name="edge_energy_mlp")(x)[:, 0] * u
        e_atom = jax.ops.segment_sum(eps, graph.receivers, num_segments=n) * nu  # [N]
        e_atom = species_scale_shift(
            e_atom, graph.species, self.species_scale, self.species_shift
        )
        return jnp.where(graph.atom_mask, e_atom, 0.0)

    def __call__(self, graph: MolecularGraph, training: bool | None = None) -> jax.Array:
        """Molecular energies ``[G]``: ``segment_sum`` of :meth:`atomic_energies` over
        ``graph_ids``; ``training`` as the attribute (:func:`~.layers.merge_training`)."""
        return graph_energies(self.atomic_energies(graph, training), graph)


ALLEGRO_SPEC = registry.register(registry.ModelSpec(
    name="allegro",
    task="molecules",
    placement=ALLEGRO_PLACEMENT,
    module=Allegro,
    defaults=ALLEGRO_TUTORIAL,
    knobs={"hidden": ("latent_dim",)},
    builtin_norm={True: {"env_normalization": "sqrt"}, False: {"env_normalization": "none"}},
    sizes={"tiny": dict(num_bessel=4, num_layers=1, latent_dim=8, num_channels=2, embed_dim=4,
                        two_body_hidden=(8,), latent_hidden=(8,), edge_energy_hidden=(4,)),
           # The authors' MD17 example (mir-group/allegro configs/example.yaml, commit
           # 8faed77: aspirin, 950 train / 50 valid, batch 5, lr 2e-3), argument by argument:
           # r_max 6.0 -> cutoff 6 Å; bessel_frequency_cutoff 4 Å^-1 -> num_bessel 8 (the
           # authors' AllegroBesselBasis takes ceil(4 * 6 / pi) = ceil(7.64)); PolynomialCutoff_p
           # 6 -> envelope_p 6; l_max 2 with parity o3_full -> l_max 2 and tensor_irreps
           # 0e+0o+1e+1o+2e+2o; num_layers 2; num_tensor_features 32 -> num_channels 32. In
           # that version an MLP's list ends with its output width (the tutorial's lists are
           # hidden layers only, hence ALLEGRO_TUTORIAL's mapping): two_body [64, 128, 256,
           # 512] -> two_body_hidden (64, 128, 256) and latent_dim 512; latent [512] -> no
           # hidden layer (one linear map to the 512 latents); env_embed [] -> the single
           # linear env_weights layer, as here; edge_eng [128] -> edge_energy_hidden (128,);
           # latent_resnet true; avg_num_neighbors auto -> env_normalization "sqrt" with N̄
           # fitted on the training set. Not mapped: the example feeds one-hot species to the
           # two-body MLP (here the tutorial's 32-wide embedding), trains the Bessel
           # frequencies, and its readout has no nonlinearity (here SiLU between layers).
           "md17": dict(cutoff=6.0, num_bessel=8, envelope_p=6, l_max=2,
                        tensor_irreps="0e+0o+1e+1o+2e+2o", num_layers=2, latent_dim=512,
                        num_channels=32, two_body_hidden=(64, 128, 256), latent_hidden=(),
                        edge_energy_hidden=(128,), latent_resnet=True)},
    citation="Musaelian et al., Learning local equivariant representations for large-scale "
             "atomistic dynamics, Nat. Commun. 14, 579 (2023); configuration: "
             "mir-group/allegro configs/tutorial.yaml",
    description="Allegro: strictly local edge-based equivariant potential (energies, forces)",
))
