r"""GemNet-T's building blocks (Gasteiger, Becker and Günnemann, NeurIPS 2021, Figure 2 and
the authors' ``gemnet/model/layers``), on flat padded edges and atoms.

Shapes: ``E`` edges (``c -> a``: ``senders = c``, ``receivers = a``), ``N`` atoms, ``M``
triplet slots per edge, ``F_a`` / ``F_e`` atom / edge width, ``T`` the triplet width,
``C`` the circular-basis width, ``B`` the bilinear width, ``L`` spherical and ``R`` radial
basis functions, ``s = 1/sqrt(2)`` (or 1 with ``residual_scaling`` off), ``alpha`` the
fitted scale factors (:mod:`.gemnet_scaling`), ``act`` the ``ScaledSiLU``. Every dense layer
has no bias and GemNet's He-orthogonal initialization::

    ResidualLayer:   x <- s (x + act(W_2 act(W_1 x)))
    TripletInteraction (edge c -> a, triplets b -> a, b != c):
      x_ba   = alpha_rbf (act(W_ba m_ba) * W_rbf e_rbf(d_ba))                      [E, F_e]
      x_ba   = act(W_down x_ba)                                                    [E, T]
      S_ca   = sum_b Y(theta_cab) (x) x_ba                                          [E, L, T]
      z_ca   = alpha_cbf sum_{c', t, l} W_bil[t, c', :] e_cbf(d_ca)[c', l] S_ca[l, t]  [E, B]
      out_ca = s (act(W_up_ca z_ca) + act(W_up_ac z_ac))          (z_ac of the reverse edge)
    InteractionBlock:
      x = s (act(W_ca m) + TripletInteraction(m));  x <- Residual^{before}(x)
      m = Residual^{after}(s (m + x))
      h = s (h + AtomUpdate(m))                       then the atom norm, if any
      m = s (m + Residual^{concat}(act(W_cat [h_c || h_a || m])))   then the edge norm
    AtomUpdate / OutputBlock (atom a):
      x_a = alpha_sum sum_{c} m_ca * W_r e_rbf(d_ca)                              [N, F_e]
      x_a = Residual^{num_atom}(act(W x_a))                                       [N, F_a]
      E_a = w_out . x_a                                              (output block only)

``e_rbf(d) = W e(d)`` is a shared linear embedding of the radial basis, ``e_cbf(d)[c', l] =
sum_r e(d)_r W_1[r, l, c']`` the down projection of the efficient bilinear layer: the triplet
sum runs over ``M`` slots per edge, so the product of the radial and angular parts is never
formed per triplet (the authors' ``EfficientInteractionDownProjection`` /
``EfficientInteractionBilinear``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax.models.gemnet_basis import he_orthogonal_init, scaled_silu
from geonorm_jax.models.gemnet_scaling import ScaleFactor
from geonorm_jax.models.gemnet_triplets import Triplets, triplet_sums
from geonorm_jax.models.layers import mixed_dot_general, mixed_einsum
from geonorm_jax.models.molecular_graph import apply_block_norm
from geonorm_jax.norms.base import Norm

__all__ = ["dense", "ResidualLayer", "AtomUpdate", "OutputBlock", "TripletInteraction",
           "InteractionBlock"]


def dense(features: int, name: str, matmul_dtype: Any = None) -> nn.Dense:
    """GemNet's ``Dense``: no bias, He-orthogonal kernel ``[in, features]``; the product's
    operands in ``matmul_dtype`` (:func:`~geonorm_jax.models.layers.mixed_dot_general`)."""
    return nn.Dense(features, use_bias=False, kernel_init=he_orthogonal_init, name=name,
                    dot_general=mixed_dot_general(matmul_dtype))


class ResidualLayer(nn.Module):
    """``x <- s (x + act(W_2 act(W_1 x)))``, ``x [..., F]`` (GemNet's ``ResidualLayer``)."""

    residual_scale: float = 1.0 / math.sqrt(2.0)
    activation: Callable = scaled_silu
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, x):
        f = x.shape[-1]
        y = self.activation(dense(f, "dense_0", self.matmul_dtype)(x))
        y = self.activation(dense(f, "dense_1", self.matmul_dtype)(y))
        return (x + y) * self.residual_scale


class AtomUpdate(nn.Module):
    """Sum of the edge embeddings onto their centres, then an MLP: ``[E, F_e] -> [N, F_a]``.

    Call: ``(m [E, F_e], rbf_emb [E, F_rbf], receivers [E], edge_mask [E], atom_mask [N],
    fit)``. ``rbf_emb`` vanishes on padded edges (the radial basis is masked), so they add
    nothing to the sums.
    """

    emb_size_atom: int
    num_residual: int
    scale_factors: bool = True
    residual_scale: float = 1.0 / math.sqrt(2.0)
    activation: Callable = scaled_silu
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, m, rbf_emb, receivers, edge_mask, atom_mask, fit=False):
        x = m * dense(m.shape[-1], "dense_rbf", self.matmul_dtype)(rbf_emb)  # [E, F_e]
        x = jax.ops.segment_sum(x, receivers, num_segments=atom_mask.shape[0])  # [N, F_e]
        x = ScaleFactor(self.scale_factors, name="scale_sum")(x, atom_mask, m, edge_mask,
                                                              fit=fit)
        x = self.activation(dense(self.emb_size_atom, "dense_0", self.matmul_dtype)(x))  # [N,F_a]
        for k in range(self.num_residual):
            x = ResidualLayer(self.residual_scale, self.activation, self.matmul_dtype,
                              name=f"residual_{k}")(x)
        return x


class OutputBlock(nn.Module):
    """:class:`AtomUpdate` and a last dense layer to one energy per atom: ``-> [N]``.

    The last layer has no bias (the authors: an atom without edges predicts 0) and the
    He-orthogonal initialization (``output_init="HeOrthogonal"``).
    """

    emb_size_atom: int
    num_residual: int
    scale_factors: bool = True
    residual_scale: float = 1.0 / math.sqrt(2.0)
    activation: Callable = scaled_silu
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, m, rbf_emb, receivers, edge_mask, atom_mask, fit=False):
        x = AtomUpdate(self.emb_size_atom, self.num_residual, self.scale_factors,
                       self.residual_scale, self.activation, self.matmul_dtype, name="update")(
            m, rbf_emb, receivers, edge_mask, atom_mask, fit)
        return dense(1, "out_energy", self.matmul_dtype)(x)[:, 0]


class TripletInteraction(nn.Module):
    """GemNet-T's triplet message passing with the efficient bilinear layer:
    ``m [E, F_e] -> [E, F_e]`` (formulas in the module docstring).

    Call: ``(m [E, F_e], rbf3 [E, F_rbf], rbf_w1 [E, C, L], sph [E, M, L] (0 on padded
    triplets), triplets, edge_mask [E], fit)``. ``triplet_chunks``: the triplet sums run in
    that many chunks of edges (:func:`~.gemnet_triplets.triplet_sums`; one while fitting).
    """

    emb_size_trip: int
    emb_size_bilinear: int
    scale_factors: bool = True
    residual_scale: float = 1.0 / math.sqrt(2.0)
    activation: Callable = scaled_silu
    matmul_dtype: Any = None
    triplet_chunks: int = 1

    @nn.compact
    def __call__(self, m, rbf3, rbf_w1, sph, triplets: Triplets, edge_mask, fit=False):
        act, f_e = self.activation, m.shape[-1]
        x_ba = act(dense(f_e, "dense_ba", self.matmul_dtype)(m))  # [E, F_e]
        x_ba2 = x_ba * dense(f_e, "mlp_rbf", self.matmul_dtype)(rbf3)
        x_ba = ScaleFactor(self.scale_factors, name="scale_rbf")(x_ba2, edge_mask, x_ba,
                                                                 edge_mask, fit=fit)
        x_ba = act(dense(self.emb_size_trip, "down_projection", self.matmul_dtype)(x_ba))  # [E,T]
        mask = triplets.triplet_mask
        # the fit and the variance diagnostics read the whole [E, M, T] table: one chunk
        whole = fit or self.is_mutable_collection("scale_stats")
        rw = triplet_sums(x_ba, sph, rbf_w1, triplets, 1 if whole else self.triplet_chunks)
        x_trip = (x_ba[triplets.edge_ba] * mask[..., None].astype(x_ba.dtype)  # [E, M, T]
                  if whole else None)
        c = rbf_w1.shape[1]
        w_bil = self.param("bilinear", he_orthogonal_init,
                           (self.emb_size_trip, c, self.emb_size_bilinear))  # [T, C, B]
        z = mixed_einsum("ect,tcb->eb", rw, w_bil, self.matmul_dtype)  # [E, B]
        z = ScaleFactor(self.scale_factors, name="scale_cbf_sum")(z, edge_mask, x_trip, mask,
                                                                  fit=fit)
        x_ca = act(dense(f_e, "up_projection_ca", self.matmul_dtype)(z))
        x_ac = act(dense(f_e, "up_projection_ac", self.matmul_dtype)(z))
        x_ac = x_ac[triplets.swap] * triplets.swap_mask[:, None].astype(x_ac.dtype)
        return (x_ca + x_ac) * self.residual_scale


class InteractionBlock(nn.Module):
    """One GemNet-T interaction: ``(h [N, F_a], m [E, F_e]) -> (h, m)`` (module docstring).

    Call: ``(h, m, rbf3, rbf_w1, sph, triplets, rbf_h [E, F_rbf], senders, receivers,
    edge_mask, atom_mask, fit)``. ``atom_norm`` normalizes ``h`` after the atom update, before
    the edges are updated from it (after the last block ``h`` reaches the energy only through
    that update: GemNet's output blocks read the edge embeddings); ``edge_norm`` normalizes
    ``m`` at the end of the block. Norms see ``[G, A, F_a]`` / ``[G, K, F_e]`` blocks with the
    masks (``atoms_per_graph``, ``edges_per_graph``; None: the batch as one graph).
    """

    emb_size_trip: int
    emb_size_bilinear: int
    num_before_skip: int
    num_after_skip: int
    num_concat: int
    num_atom: int
    scale_factors: bool = True
    residual_scale: float = 1.0 / math.sqrt(2.0)
    activation: Callable = scaled_silu
    matmul_dtype: Any = None
    triplet_chunks: int = 1
    atom_norm: Norm | None = None
    edge_norm: Norm | None = None
    atoms_per_graph: int | None = None
    edges_per_graph: int | None = None
    training: bool = False

    @nn.compact
    def __call__(self, h, m, rbf3, rbf_w1, sph, triplets, rbf_h, senders, receivers,
                 edge_mask, atom_mask, fit=False):
        act, s, f_e = self.activation, self.residual_scale, m.shape[-1]
        md = self.matmul_dtype
        res = lambda name: ResidualLayer(s, act, md, name=name)  # noqa: E731
        x_skip = act(dense(f_e, "dense_ca", md)(m))
        x3 = TripletInteraction(self.emb_size_trip, self.emb_size_bilinear, self.scale_factors,
                                s, act, md, self.triplet_chunks, name="triplet_interaction")(
            m, rbf3, rbf_w1, sph, triplets, edge_mask, fit)
        x = (x_skip + x3) * s
        for k in range(self.num_before_skip):
            x = res(f"residual_before_skip_{k}")(x)
        m = (m + x) * s
        for k in range(self.num_after_skip):
            m = res(f"residual_after_skip_{k}")(m)
        h2 = AtomUpdate(h.shape[-1], self.num_atom, self.scale_factors, s, act, md,
                        name="atom_update")(m, rbf_h, receivers, edge_mask, atom_mask, fit)
        h = (h + h2) * s
        if self.atom_norm is not None:
            h = apply_block_norm(self.atom_norm, h, atom_mask, self.atoms_per_graph,
                                 name="atom_norm", training=self.training)
        m2 = act(dense(f_e, "concat", md)(jnp.concatenate([h[senders], h[receivers], m], -1)))
        for k in range(self.num_concat):
            m2 = res(f"residual_concat_{k}")(m2)
        m = (m + m2) * s
        if self.edge_norm is not None:
            m = apply_block_norm(self.edge_norm, m, edge_mask, self.edges_per_graph,
                                 name="edge_norm", training=self.training)
        return h, m
