"""MD observables of Fu et al., *Forces are not Enough: Benchmark and Critical Evaluation for
Machine Learning Force Fields with Molecular Simulations* (TMLR 2023, arXiv:2210.07237), as
pure JAX functions (``bonds`` alone is host-side NumPy).

Source of the definitions. The paper's full text could not be retrieved here (only its
abstract); the definitions follow the authors' reference implementation, ``observable.ipynb``
and ``configs/simulate/*.yml`` of https://github.com/kyonofx/MDsim (the paper's code), which
gives, for MD17:

* stability: a run collapses at the first recorded frame where any bond length deviates from
  its reference length by more than 0.5 Å; the reference length of a bond is its *mean* over
  the reference (DFT) trajectory; the reported stability is the time of that frame in ps (the
  full simulated time if none is found);
* ``h(r)``: ``np.histogram(all pairwise distances, bins, density=True)`` with
  ``bins = linspace(1e-6, 10, 501)`` (500 bins, 0 to 10 Å; the 1e-6 drops the zero
  self-distances of ``torch.cdist``), over the frames before the collapse;
* ``h(r)`` error: ``mean(|h - h_ref|) * 10``, i.e. ``sum |h - h_ref| dr`` with ``dr = 0.02`` Å
  (the L1 distance between the two densities, 0 for equal and 2 for disjoint ones);
* simulation protocol (:data:`MD17_PROTOCOL`): 500 K, Nosé-Hoover thermostat
  (``ttime = 20`` time steps, i.e. 10 fs), time step 0.5 fs, 600 000 steps = 300 ps, a frame
  recorded every 100 steps (0.05 ps, 6 000 frames), initial positions a random test-split
  configuration and Maxwell-Boltzmann velocities at 500 K; five runs (seeds) per model.

Energy drift and temperature are not among the paper's MD17 metrics; their definitions are
the conventional ones stated in each docstring.

Units: Å, eV, amu, fs for velocities (Å/fs), and whatever unit ``times`` come in (ps in the
paper) for times and rates. Trajectories are ``positions [T, A, 3]``; replicas
``[R, T, A, 3]`` go through ``jax.vmap`` (every function here but :func:`bonds` is jit-able
and vmappable).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units as _units
from ase.data import covalent_radii as _covalent_radii

__all__ = [
    "AMU_A2_PER_FS2_TO_EV",
    "KB_EV_PER_K",
    "DEFAULT_HR_BINS",
    "MD17Protocol",
    "MD17_PROTOCOL",
    "Stability",
    "bonds",
    "bond_lengths",
    "time_to_instability",
    "stable_frames",
    "distance_histogram",
    "h_error",
    "energy_drift",
    "max_energy_deviation",
    "degrees_of_freedom",
    "kinetic_energy",
    "temperature",
]

#: 1 amu·Å²/fs² in eV (``1 / ase.units.fs**2`` ≈ 103.6427): kinetic energy ``m v² / 2`` of
#: masses in amu and velocities in Å/fs, times this, is in eV.
AMU_A2_PER_FS2_TO_EV: float = float(1.0 / _units.fs**2)

#: Boltzmann's constant in eV/K (``ase.units.kB`` ≈ 8.617e-5).
KB_EV_PER_K: float = float(_units.kB)

#: Fu et al.'s ``h(r)`` bins: 500 bins from 1e-6 to 10 Å (``dr`` ≈ 0.02 Å).
DEFAULT_HR_BINS: np.ndarray = np.linspace(1e-6, 10.0, 501)


class MD17Protocol(NamedTuple):
    """Fu et al.'s MD17 simulation and evaluation settings (MDsim ``configs/simulate``)."""

    temperature_k: float = 500.0
    timestep_fs: float = 0.5
    num_steps: int = 600_000  # 300 ps
    record_every: int = 100  # a frame every 0.05 ps
    thermostat: str = "nose-hoover"
    thermostat_steps: float = 20.0  # MDsim's ``ttime``: Q = 3 A kT (ttime dt)^2, 10 fs
    stability_threshold_a: float = 0.5
    hr_max_a: float = 10.0
    hr_num_bins: int = 500
    num_seeds: int = 5


#: The settings of :class:`MD17Protocol` as used by Fu et al. for MD17.
MD17_PROTOCOL = MD17Protocol()


class Stability(NamedTuple):
    """Result of :func:`time_to_instability` (each field gains the leading axes of a vmap).

    ``stable``: bool, no recorded frame broke the criterion. ``time``: the time of the first
    unstable frame, or ``times[-1]`` (the full simulated time) if stable. ``first_frame``:
    int, the index of the first unstable frame, or ``T`` (the number of frames) if stable, so
    that frames ``[0, first_frame)`` are the stable part (:func:`stable_frames`).
    """

    stable: jax.Array
    time: jax.Array
    first_frame: jax.Array


def _shape_error(name: str, expected: str, got) -> ValueError:
    return ValueError(f"{name}: expected shape {expected}, got {tuple(np.shape(got))}")


def _check_positions(name: str, x, expected: str, ndim: int | None = None) -> None:
    s = np.shape(x)
    if len(s) < 2 or s[-1] != 3 or (ndim is not None and len(s) != ndim):
        raise _shape_error(name, expected, x)


def _check_pairs(pairs, num_atoms: int) -> None:
    s = np.shape(pairs)
    if len(s) != 2 or s[1] != 2:
        raise _shape_error("pairs", "[P, 2]", pairs)
    dtype = jnp.asarray(pairs).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"pairs: expected an integer array, got dtype {dtype}")
    checkable = isinstance(pairs, np.ndarray) and pairs.size
    if checkable and (pairs.min() < 0 or pairs.max() >= num_atoms):
        raise ValueError(
            f"pairs: expected atom indices in [0, {num_atoms}), got {pairs.min()}..{pairs.max()}"
        )


def bonds(atomic_numbers, positions, *, scale: float = 1.2) -> np.ndarray:
    """The covalent bonds of a reference structure (host side, NumPy).

    Atoms ``i < j`` are bonded when ``|x_i - x_j| < scale * (r_i + r_j)``, ``r`` the covalent
    radii of ``ase.data.covalent_radii`` (Cordero et al. 2008). Fu et al. (MDsim) use ASE's
    ``NeighborList(natural_cutoffs(atoms))`` with its default skin of 0.3 Å instead; for
    organic molecules both give the same graph (bonded ratios ``d / (r_i + r_j)`` lie near
    1.0, the next pairs, geminal H-H and 1-3 pairs, above 1.6).

    Args:
      atomic_numbers: ``[A]`` int.
      positions: ``[A, 3]`` Å.
      scale: tolerance factor on the sum of covalent radii.

    Returns:
      ``[P, 2]`` int32 pairs ``(i, j)``, ``i < j``, in lexicographic order.
    """
    z = np.asarray(atomic_numbers)
    x = np.asarray(positions, np.float64)
    if z.ndim != 1:
        raise _shape_error("atomic_numbers", "[A]", z)
    if x.shape != (z.shape[0], 3):
        raise _shape_error("positions", f"[A, 3] = ({z.shape[0]}, 3)", x)
    if z.size and (z.min() < 1 or z.max() >= len(_covalent_radii)):
        raise ValueError(
            f"atomic_numbers: expected values in [1, {len(_covalent_radii) - 1}], "
            f"got {z.min()}..{z.max()}"
        )
    r = _covalent_radii[z]
    i, j = np.triu_indices(z.shape[0], 1)
    d = np.linalg.norm(x[i] - x[j], axis=-1)
    keep = d < scale * (r[i] + r[j])
    return np.stack([i[keep], j[keep]], axis=-1).astype(np.int32).reshape(-1, 2)


def bond_lengths(positions, pairs) -> jax.Array:
    """``|x_i - x_j|`` for each pair: ``positions [..., A, 3]``, ``pairs [P, 2]`` ->
    ``[..., P]`` Å (the atom and xyz axes are reduced; leading axes, e.g. frames, kept)."""
    _check_positions("positions", positions, "[..., A, 3]")
    _check_pairs(pairs, np.shape(positions)[-2])
    x = jnp.asarray(positions)
    pairs = jnp.asarray(pairs)
    d = x[..., pairs[:, 0], :] - x[..., pairs[:, 1], :]
    return jnp.sqrt(jnp.sum(d * d, axis=-1))


def time_to_instability(
    positions, pairs, reference_lengths, times, threshold: float = 0.5
) -> Stability:
    """Fu et al.'s MD17 stability criterion.

    Frame ``t`` is unstable when ``max_p |b_p(t) - b_p^ref| > threshold`` with ``b_p(t)`` the
    length of bond ``p`` (:func:`bond_lengths`) and ``b^ref`` its reference length; Fu et
    al. take the mean over the reference trajectory,
    ``bond_lengths(reference_positions, pairs).mean(0)``, and ``threshold = 0.5`` Å. A frame
    with a non-finite bond length counts as unstable. The run's stability is the time of its
    first unstable frame (Fu et al. report it in ps), or the full simulated time
    ``times[-1]`` if no frame is unstable.

    Args:
      positions: ``[T, A, 3]`` Å, one trajectory (vmap for replicas ``[R, T, A, 3]`` with
        ``in_axes=(0, None, None, None)``).
      pairs: ``[P, 2]`` int bonds (:func:`bonds` of the reference structure).
      reference_lengths: ``[P]`` Å.
      times: ``[T]`` recording times (any unit; ``time`` comes back in it).
      threshold: Å.

    Returns:
      :class:`Stability` of scalars (frames and bonds reduced).
    """
    _check_positions("positions", positions, "[T, A, 3]", ndim=3)
    num_frames = np.shape(positions)[0]
    num_pairs = np.shape(pairs)[0] if np.ndim(pairs) == 2 else None
    if np.shape(reference_lengths) != (num_pairs,):
        raise _shape_error("reference_lengths", f"[P] = ({num_pairs},)", reference_lengths)
    if np.shape(times) != (num_frames,):
        raise _shape_error("times", f"[T] = ({num_frames},)", times)
    if num_frames == 0:
        raise ValueError("positions: expected at least one frame, got T = 0")
    dev = jnp.abs(bond_lengths(positions, pairs) - jnp.asarray(reference_lengths))  # [T, P]
    ok = jnp.all(dev <= threshold, axis=-1)  # NaN compares False: unstable
    unstable = ~ok
    any_unstable = jnp.any(unstable)
    first = jnp.argmax(unstable)
    times = jnp.asarray(times)
    return Stability(
        stable=~any_unstable,
        time=jnp.where(any_unstable, times[first], times[-1]),
        first_frame=jnp.where(any_unstable, first, num_frames),
    )


def stable_frames(stability: Stability, num_frames: int) -> jax.Array:
    """``[T]`` bool mask of the frames before the first unstable one (all if stable), the
    ``mask`` of :func:`distance_histogram`. Fu et al. also count the first unstable frame in
    ``h(r)`` (one frame of up to 6 000); this mask leaves it out."""
    return jnp.arange(num_frames) < stability.first_frame


def distance_histogram(positions, bins=DEFAULT_HR_BINS, mask=None, atom_mask=None) -> jax.Array:
    """Fu et al.'s ``h(r)``: the normalized histogram of all interatomic distances.

    ``h_k = n_k / (N dr_k)`` with ``n_k`` the number of distances ``|x_i(t) - x_j(t)|``,
    ``i < j``, over the frames ``t`` with ``mask[t]``, in bin ``[bins[k], bins[k+1])`` (the
    last bin closed, as ``np.histogram``), ``N = sum_k n_k`` (distances outside the bins are
    not counted), ``dr_k = bins[k+1] - bins[k]``; so ``sum_k h_k dr_k = 1``. This equals
    Fu et al.'s ``np.histogram(cdist(traj, traj).flatten(), bins, density=True)``: ordered
    pairs count each distance twice and the zero self-distances fall below ``bins[0] = 1e-6``.
    If nothing is counted (all frames masked) ``h`` is NaN.

    Args:
      positions: ``[T, A, 3]`` Å (frames and pairs are reduced).
      bins: ``[K+1]`` increasing edges, Å; default :data:`DEFAULT_HR_BINS` (500 bins,
        1e-6 to 10 Å).
      mask: optional ``[T]`` bool, the frames to count (e.g. :func:`stable_frames`).
      atom_mask: optional ``[A]`` bool, real (not padding) atoms.

    Returns:
      ``h [K]`` in 1/Å.
    """
    _check_positions("positions", positions, "[T, A, 3]", ndim=3)
    num_frames, num_atoms, _ = np.shape(positions)
    if np.ndim(bins) != 1 or np.shape(bins)[0] < 2:
        raise _shape_error("bins", "[K+1] with K >= 1", bins)
    if mask is not None and np.shape(mask) != (num_frames,):
        raise _shape_error("mask", f"[T] = ({num_frames},)", mask)
    if atom_mask is not None and np.shape(atom_mask) != (num_atoms,):
        raise _shape_error("atom_mask", f"[A] = ({num_atoms},)", atom_mask)
    x = jnp.asarray(positions)
    edges = jnp.asarray(bins, x.dtype)
    num_bins = edges.shape[0] - 1
    i, j = np.triu_indices(num_atoms, 1)
    d = x[:, i] - x[:, j]
    r = jnp.sqrt(jnp.sum(d * d, axis=-1))  # [T, P]
    w = jnp.ones_like(r)
    if mask is not None:
        w = w * jnp.asarray(mask, x.dtype)[:, None]
    if atom_mask is not None:
        am = jnp.asarray(atom_mask, x.dtype)
        w = w * (am[i] * am[j])[None, :]
    inside = (r >= edges[0]) & (r <= edges[-1])
    k = jnp.clip(jnp.searchsorted(edges, r, side="right") - 1, 0, num_bins - 1)
    counts = jnp.zeros(num_bins, x.dtype).at[k.ravel()].add(jnp.where(inside, w, 0.0).ravel())
    return counts / (jnp.sum(counts) * jnp.diff(edges))


def h_error(h, h_ref, bins=DEFAULT_HR_BINS) -> jax.Array:
    """Fu et al.'s ``h(r)`` error: ``sum_k |h_k - h_ref_k| dr_k`` (the integral
    ``∫ |h(r) - h_ref(r)| dr``), 0 for equal and 2 for disjoint normalized histograms.

    Fu et al. compute ``mean_k |h_k - h_ref_k| * 10`` for their 500 bins from 1e-6 to 10 Å,
    i.e. ``dr = 0.02`` instead of ``(10 - 1e-6) / 500`` here: a relative difference of 1e-7.

    Args:
      h: ``[..., K]`` (the last axis is reduced).
      h_ref: ``[K]`` (or broadcastable to ``h``).
      bins: ``[K+1]`` edges, Å.
    """
    if np.ndim(bins) != 1 or np.ndim(h) < 1 or np.shape(h)[-1] != np.shape(bins)[0] - 1:
        raise ValueError(
            f"h: expected shape [..., K] with bins [K+1]; got h {tuple(np.shape(h))}, "
            f"bins {tuple(np.shape(bins))}"
        )
    if np.ndim(h_ref) < 1 or np.shape(h_ref)[-1] != np.shape(h)[-1]:
        raise _shape_error("h_ref", f"[..., K] = [..., {np.shape(h)[-1]}]", h_ref)
    dr = jnp.diff(jnp.asarray(bins))
    return jnp.sum(jnp.abs(jnp.asarray(h) - jnp.asarray(h_ref)) * dr, axis=-1)


def _check_series(total_energy, times=None, mask=None) -> None:
    if np.ndim(total_energy) != 1 or np.shape(total_energy)[0] < 1:
        raise _shape_error("total_energy", "[T] with T >= 1", total_energy)
    n = np.shape(total_energy)[0]
    if times is not None and np.shape(times) != (n,):
        raise _shape_error("times_ps", f"[T] = ({n},)", times)
    if mask is not None and np.shape(mask) != (n,):
        raise _shape_error("mask", f"[T] = ({n},)", mask)


def energy_drift(total_energy, times_ps, num_atoms, mask=None) -> jax.Array:
    """Energy drift: the least-squares slope of the total energy over time, per atom.

    ``drift = sum_t w_t (t - t̄)(E_t - Ē) / sum_t w_t (t - t̄)² / num_atoms`` with
    ``t̄, Ē`` the ``w``-weighted means and ``w = mask`` (all ones by default): eV per atom
    per ps for ``E`` in eV and ``t`` in ps; signed (positive: the system heats). Meaningful
    for NVE runs (a thermostat removes the drift from ``E``); not one of Fu et al.'s MD17
    metrics. Needs two distinct unmasked times (else NaN).

    Args:
      total_energy: ``[T]`` eV, potential plus kinetic (reduced).
      times_ps: ``[T]`` ps.
      num_atoms: number of (real) atoms, int or scalar array.
      mask: optional ``[T]`` bool, the frames to fit (e.g. :func:`stable_frames`).
    """
    _check_series(total_energy, times_ps, mask)
    e = jnp.asarray(total_energy)
    t = jnp.asarray(times_ps, e.dtype)
    w = jnp.ones_like(e) if mask is None else jnp.asarray(mask, e.dtype)
    sw = jnp.sum(w)
    tc = t - jnp.sum(w * t) / sw
    ec = e - jnp.sum(w * e) / sw
    return jnp.sum(w * tc * ec) / jnp.sum(w * tc * tc) / num_atoms


def max_energy_deviation(total_energy, num_atoms, mask=None) -> jax.Array:
    """``max_t |E_t - E_0| / num_atoms`` (eV per atom) over the frames with ``mask[t]``,
    ``E_0 = total_energy[0]`` (frames reduced). The companion of :func:`energy_drift` for
    energy conservation: catches jumps and oscillations a linear fit averages out."""
    _check_series(total_energy, mask=mask)
    e = jnp.asarray(total_energy)
    dev = jnp.abs(e - e[0])
    if mask is not None:
        dev = jnp.where(jnp.asarray(mask, bool), dev, 0.0)
    return jnp.max(dev) / num_atoms


def degrees_of_freedom(num_atoms) -> jax.Array:
    """Degrees of freedom of a free molecule at rest (momentum and angular momentum zero):
    ``3A - 6`` for ``A > 2``, ``1`` (``3A - 5``, linear) for ``A = 2``, ``3`` for ``A <= 1``
    (nothing removed, so that ``T`` stays finite). ``num_atoms`` int or traced scalar."""
    n = jnp.asarray(num_atoms)
    return jnp.where(n > 2, 3 * n - 6, jnp.where(n == 2, 1, 3))


def _check_velocities(velocities, masses, atom_mask) -> None:
    _check_positions("velocities", velocities, "[..., A, 3]")
    num_atoms = np.shape(velocities)[-2]
    if np.shape(masses) != (num_atoms,):
        raise _shape_error("masses", f"[A] = ({num_atoms},)", masses)
    if atom_mask is not None and np.shape(atom_mask) != (num_atoms,):
        raise _shape_error("atom_mask", f"[A] = ({num_atoms},)", atom_mask)


def kinetic_energy(velocities, masses, atom_mask=None) -> jax.Array:
    """``K = sum_a m_a |v_a|² / 2`` in eV: ``velocities [..., A, 3]`` Å/fs, ``masses [A]``
    amu, optional ``atom_mask [A]``; atom and xyz axes reduced -> ``[...]``."""
    _check_velocities(velocities, masses, atom_mask)
    v = jnp.asarray(velocities)
    m = jnp.asarray(masses, v.dtype)
    if atom_mask is not None:
        m = m * jnp.asarray(atom_mask, v.dtype)
    return 0.5 * AMU_A2_PER_FS2_TO_EV * jnp.sum(m[:, None] * v * v, axis=(-2, -1))


def temperature(velocities, masses, atom_mask=None, *, dof=None) -> jax.Array:
    """Instantaneous kinetic temperature ``T = 2 K / (dof k_B)`` in K.

    ``K`` from :func:`kinetic_energy` (eV), ``k_B`` = :data:`KB_EV_PER_K`. ``dof=None`` takes
    :func:`degrees_of_freedom` of the real atoms, ``3A - 6`` for a free molecule whose
    momentum and angular momentum are zero (as after ASE's ``Stationary`` and
    ``ZeroRotation``): then the mean of ``T`` over a canonical ensemble is the bath
    temperature. ASE's ``Atoms.get_temperature`` (and MDsim's logs) use ``dof = 3A`` instead,
    which reads ``(3A - 6) / 3A`` of that (7/9 for ethanol); pass ``dof=3 * A`` to match it.
    Note that ASE's ``Stationary`` and ``ZeroRotation`` rescale by default
    (``preserve_temperature=True``) to keep the 3A-dof temperature of a Maxwell-Boltzmann
    draw, which then reads ``3A / (3A - 6)`` times the target here (27/21 for ethanol); pass
    ``preserve_temperature=False`` for a draw at the target over ``3A - 6`` dof.

    Args:
      velocities: ``[..., A, 3]`` Å/fs (atom and xyz axes reduced).
      masses: ``[A]`` amu.
      atom_mask: optional ``[A]`` bool, real atoms (padding excluded from ``K`` and ``A``).
      dof: optional int or array broadcastable to ``[...]``.

    Returns:
      ``[...]`` K.
    """
    ke = kinetic_energy(velocities, masses, atom_mask)
    if dof is None:
        n = np.shape(velocities)[-2] if atom_mask is None else jnp.sum(jnp.asarray(atom_mask))
        dof = degrees_of_freedom(n)
    return 2.0 * ke / (jnp.asarray(dof, ke.dtype) * KB_EV_PER_K)
