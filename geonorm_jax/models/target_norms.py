"""Dataset statistics behind the molecular models' normalizations (Allegro / NequIP, SchNet).

* :func:`avg_num_neighbors`: ``N̄``, the mean number of neighbours within the cutoff over all
  real atoms of all training frames (the survey's ``N_{b,x,v}``, Table 1). Allegro divides
  its environment sums by ``sqrt(N̄)``, MACE by ``N̄``.
* :func:`fit_species_shift`: per-species energy shifts ``mu_Z``, the least-squares solution
  of ``E_b ≈ sum_Z n_{b,Z} mu_Z`` (NequIP's ``per_species_rescale_shifts`` fitted on the
  training energies; ``n_{b,Z}`` counts the atoms of species ``Z`` in frame ``b``).
* :func:`force_rms`: ``sigma_F = sqrt(mean_{b,i,d} F_{b,i,d}^2)`` over real atoms, the scale
  NequIP and Allegro use for atomic energies (``per_species_rescale_scales =
  dataset_forces_rms``) and for the targets.
* :class:`EnergyNormalization`: the shift and scale together; ``model_kwargs()`` switches on
  the models' per-species scale and shift, ``normalize_targets`` / ``denormalize`` scale
  the training targets: ``E' = (E - sum_i mu_{Z_i}) / sigma_F``, ``F' = F / sigma_F``.

Inputs are NumPy-like arrays of whole training sets (these run once, outside ``jit``) and the
results are Python floats / tuples so that they can be module attributes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "avg_num_neighbors",
    "species_counts",
    "fit_species_shift",
    "force_rms",
    "per_species_force_rms",
    "EnergyNormalization",
]

MAX_ATOMIC_NUMBER = 118


def _frames_and_species(positions, atomic_numbers, atom_mask):
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"expected positions [B, A, 3]; received shape {pos.shape}")
    b, a, _ = pos.shape
    z = np.asarray(atomic_numbers)
    if z.shape == (a,):
        z = np.broadcast_to(z, (b, a))
    if z.shape != (b, a):
        raise ValueError(
            f"expected atomic_numbers [A] = ({a},) or [B, A] = ({b}, {a}); received {z.shape}"
        )
    if atom_mask is None:
        mask = z > 0
    else:
        mask = np.asarray(atom_mask, bool)
        if mask.shape == (a,):
            mask = np.broadcast_to(mask, (b, a))
        if mask.shape != (b, a):
            raise ValueError(
                f"expected atom_mask [A] = ({a},) or [B, A] = ({b}, {a}); received {mask.shape}"
            )
    return pos, z, mask


def avg_num_neighbors(
    positions, cutoff: float, atomic_numbers=None, atom_mask=None, chunk: int = 256
) -> float:
    r"""``N̄ = (1 / #real atoms) sum_{b, i real} #{j real, j != i : |x_bj - x_bi| < r_c}``.

    Reduced axes: frames ``b`` and atoms ``i`` (one number for the data set).

    Args:
      positions: ``[B, A, 3]`` frames (Å).
      cutoff: ``r_c`` (Å).
      atomic_numbers: ``[A]`` or ``[B, A]`` (0 = padding) to derive the mask, or None.
      atom_mask: ``[A]`` or ``[B, A]`` bool; default ``atomic_numbers > 0``, or all real.
      chunk: frames per NumPy block (bounds memory at ``chunk A^2``).

    Returns:
      ``N̄`` as a float (0.0 when no atom has a neighbour).
    """
    if not cutoff > 0:
        raise ValueError(f"avg_num_neighbors: expected a cutoff > 0 (Å); received {cutoff!r}")
    pos = np.asarray(positions, np.float64)
    if atomic_numbers is None and atom_mask is None:
        if pos.ndim != 3 or pos.shape[-1] != 3:
            raise ValueError(f"expected positions [B, A, 3]; received shape {pos.shape}")
        atom_mask = np.ones(pos.shape[:2], bool)
        atomic_numbers = np.ones(pos.shape[:2], int)
    pos, _, mask = _frames_and_species(pos, atomic_numbers, atom_mask)
    total, atoms = 0.0, float(mask.sum())
    a = pos.shape[1]
    off_diag = ~np.eye(a, dtype=bool)
    for start in range(0, pos.shape[0], chunk):
        p, m = pos[start : start + chunk], mask[start : start + chunk]
        d2 = np.sum(np.square(p[:, :, None, :] - p[:, None, :, :]), axis=-1)
        pair = (d2 < cutoff**2) & off_diag & m[:, :, None] & m[:, None, :]
        total += float(pair.sum())
    return total / atoms if atoms > 0 else 0.0


def species_counts(atomic_numbers, atom_mask=None, num_frames: int | None = None):
    """Atoms of each species per frame: ``(counts [B, S] int, species (S,) sorted tuple)``.

    ``atomic_numbers`` is ``[B, A]`` (or ``[A]`` with ``num_frames``); padded slots (``Z = 0``
    or ``atom_mask == False``) are not counted; ``S`` is the number of distinct real species.
    """
    z = np.asarray(atomic_numbers)
    if z.ndim == 1:
        z = np.broadcast_to(z, (num_frames or 1, z.shape[0]))
    if z.ndim != 2:
        raise ValueError(f"species_counts: expected atomic_numbers [B, A]; received {z.shape}")
    mask = z > 0 if atom_mask is None else np.broadcast_to(np.asarray(atom_mask, bool), z.shape)
    present = tuple(int(s) for s in np.unique(z[mask]))
    counts = np.stack([np.sum((z == s) & mask, axis=1) for s in present], axis=1)
    return counts, present


def fit_species_shift(energies, atomic_numbers, atom_mask=None) -> tuple[float, ...]:
    r"""Per-species energy shifts by least squares (NequIP / Allegro's per-species shifts).

    .. math:: \mu = \arg\min_\mu \sum_b \big(E_b - \sum_Z n_{b,Z} \mu_Z\big)^2

    with the minimum-norm solution when the counts matrix ``n [B, S]`` is rank deficient (an
    MD trajectory of one molecule has identical rows: then ``mu = n_0 E̅ / |n_0|^2``, the mean
    energy spread over the species in proportion to their counts).

    Args:
      energies: ``[B]`` total energies.
      atomic_numbers: ``[B, A]`` or ``[A]`` (same molecule in every frame).
      atom_mask: optional ``[A]`` / ``[B, A]`` bool.

    Returns:
      a tuple indexed by atomic number, length ``max Z + 1``, zero for absent species.
    """
    e = np.asarray(energies, np.float64)
    if e.ndim != 1:
        raise ValueError(f"fit_species_shift: expected energies [B]; received shape {e.shape}")
    z = np.asarray(atomic_numbers)
    if z.ndim == 1:
        z = np.broadcast_to(z, (e.shape[0], z.shape[0]))
    if z.ndim != 2 or z.shape[0] != e.shape[0]:
        raise ValueError(
            f"fit_species_shift: expected atomic_numbers [B, A] with B = {e.shape[0]} (or [A]); "
            f"received {z.shape}"
        )
    counts, present = species_counts(z, atom_mask)
    mu, *_ = np.linalg.lstsq(counts.astype(np.float64), e, rcond=None)
    out = np.zeros(max(present) + 1)
    out[list(present)] = mu
    return tuple(float(v) for v in out)


def force_rms(forces, atom_mask=None) -> float:
    r"""``sigma_F = sqrt( sum_{b,i,d} m_{b,i} F_{b,i,d}^2 / (3 sum_{b,i} m_{b,i}) )``.

    Reduced axes: frames, atoms and the 3 components. ``forces`` is ``[B, A, 3]`` (or
    ``[N, 3]``), ``atom_mask`` broadcastable to its leading axes (default all real).
    """
    f = np.asarray(forces, np.float64)
    if f.ndim < 2 or f.shape[-1] != 3:
        raise ValueError(f"force_rms: expected forces [B, A, 3] or [N, 3]; received {f.shape}")
    m = np.ones(f.shape[:-1]) if atom_mask is None else np.asarray(atom_mask, np.float64)
    m = np.broadcast_to(m, f.shape[:-1])
    denom = 3.0 * m.sum()
    if denom == 0:
        raise ValueError("force_rms: expected at least one real atom; the mask is all False")
    return float(np.sqrt(np.sum(m[..., None] * f**2) / denom))


def per_species_force_rms(forces, atomic_numbers, atom_mask=None) -> tuple[float, ...]:
    r"""``sigma_Z = sqrt(mean_{b, i: Z_i = Z, d} F_{b,i,d}^2)``, one RMS per species.

    The per-type force RMS of the Allegro tutorial (``per_type_energy_scales``). ``forces``
    ``[B, A, 3]``, ``atomic_numbers`` ``[A]`` or ``[B, A]``. Returns a tuple indexed by atomic
    number (length ``max Z + 1``), 1.0 for absent species.
    """
    f = np.asarray(forces, np.float64)
    if f.ndim != 3 or f.shape[-1] != 3:
        raise ValueError(f"per_species_force_rms: expected forces [B, A, 3]; received {f.shape}")
    _, z, mask = _frames_and_species(f, atomic_numbers, atom_mask)
    present = np.unique(z[mask])
    out = np.ones(int(present.max()) + 1)
    for s in present:
        out[s] = force_rms(f, mask & (z == s))
    return tuple(float(v) for v in out)


class EnergyNormalization(NamedTuple):
    """Per-species shift ``mu_Z`` (tuple indexed by Z) and scale ``sigma`` (force RMS: one float,
    or a tuple indexed by Z for the per-species RMS).

    Model side (NequIP / Allegro): ``E_i = sigma * E_i^net + mu_{Z_i}``. Target side (when
    training on scaled targets instead): ``E' = (E - sum_i mu_{Z_i}) / sigma``,
    ``F' = F / sigma``.
    """

    shift: tuple[float, ...]
    scale: float | tuple[float, ...]

    @classmethod
    def fit(
        cls, energies, forces, atomic_numbers, atom_mask=None, per_species_scale: bool = False
    ) -> EnergyNormalization:
        """Shift by :func:`fit_species_shift`; scale by :func:`force_rms` or, with
        ``per_species_scale``, :func:`per_species_force_rms`."""
        if per_species_scale:
            scale = per_species_force_rms(forces, atomic_numbers, atom_mask)
        else:
            mask = atom_mask
            if mask is None:
                z = np.asarray(atomic_numbers)
                mask = np.broadcast_to(z > 0, np.asarray(forces).shape[:-1])
            scale = force_rms(forces, mask)
        return cls(shift=fit_species_shift(energies, atomic_numbers, atom_mask), scale=scale)

    def model_kwargs(self) -> dict:
        """``{"species_shift": ..., "species_scale": ...}`` for ``Allegro`` / ``SchNet``."""
        scale = self.scale if isinstance(self.scale, tuple) else float(self.scale)
        return {"species_shift": tuple(self.shift), "species_scale": scale}

    def _global_scale(self) -> float:
        if not isinstance(self.scale, tuple):
            return float(self.scale)
        raise ValueError(
            "EnergyNormalization: target scaling needs one global scale; received a per-species "
            "scale (fit with per_species_scale=False for normalize_targets)"
        )

    def reference_energy(self, atomic_numbers, atom_mask=None):
        """``sum_i mu_{Z_i}`` per frame: ``atomic_numbers [B, A]`` -> ``[B]`` (NumPy)."""
        z = np.asarray(atomic_numbers)
        table = np.asarray(self.shift, np.float64)
        if int(z.max()) >= table.shape[0]:
            table = np.pad(table, (0, int(z.max()) + 1 - table.shape[0]))
        mu = table[z]
        if atom_mask is not None:
            mu = mu * np.asarray(atom_mask, np.float64)
        return mu.sum(axis=-1)

    def normalize_targets(self, energies, forces, atomic_numbers, atom_mask=None):
        """``(E - sum_i mu_{Z_i}) / sigma [B]`` and ``F / sigma [B, A, 3]``."""
        scale = self._global_scale()
        ref = self.reference_energy(atomic_numbers, atom_mask)
        e = (np.asarray(energies, np.float64) - ref) / scale
        return e, np.asarray(forces, np.float64) / scale

    def denormalize(self, energies, forces, atomic_numbers, atom_mask=None):
        """Inverse of :meth:`normalize_targets`."""
        scale = self._global_scale()
        ref = self.reference_energy(atomic_numbers, atom_mask)
        e = np.asarray(energies, np.float64) * scale + ref
        return e, np.asarray(forces, np.float64) * scale
