r"""A trained potential from a run directory: a jitted energy-and-forces function.

:func:`load_potential` reads a run's configuration, rebuilds its model through the model
registry (the same code path as training: :func:`geonorm_jax.train.setup.build`, so the
training-set statistics N̄, ``mu_Z`` and ``sigma`` are the run's), restores the best-validation
parameters of one seed and returns a :class:`Potential`:

* :meth:`Potential.energy_and_forces`: ``(positions [A, 3] or [B, A, 3] Å, atomic_numbers
  [A] or [B, A]) -> (E [] or [B] eV, F [A, 3] or [B, A, 3] eV/Å)``, ``F = -dE/dx``, jitted.
  Calls are padded to *size buckets* (atoms to the next of :data:`ATOM_BUCKETS` or a multiple
  of 32, frames to a power of two) with atomic number 0, which every registered potential
  masks: a changing number of atoms reuses compiled code instead of recompiling at every call
  (:attr:`Potential.compile_count` counts compilations).
* :meth:`Potential.energy_fn`: ``positions [A, 3] -> E`` for one molecule, traceable: the
  ``energy_fn(R)`` of ``jax_md`` (``jax_md.quantity.force(energy_fn)`` gives the forces) and of
  :func:`geonorm_jax.potentials.md.simulate`.
* :meth:`Potential.energy_forces_fn`: ``positions [A, 3] -> (E, F)``, traceable (one
  evaluation of the model and its gradient, for integrators inside ``lax.scan``).

Units: every function returns eV and eV/Å, whatever unit the run trained in: a run with
``molecules.energy_unit = "kcal/mol"`` (MD17's unit) has its outputs multiplied by
:data:`~geonorm_jax.data.molecules.units.KCAL_PER_MOL_EV` (:attr:`Potential.to_ev`), so ASE and
the MD driver always see eV.

Precision: ``dtype=jnp.float64`` evaluates in float64 (parameters cast up) where the caller has
enabled ``jax_enable_x64``; otherwise float32, the training precision.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax import xla

__all__ = ["Potential", "load_potential", "ATOM_BUCKETS", "atom_bucket", "frame_bucket"]

#: atom counts a call is padded to (then multiples of 32)
ATOM_BUCKETS: tuple[int, ...] = (8, 16, 24, 32)


def atom_bucket(num_atoms: int) -> int:
    """The padded atom count of a call with ``num_atoms`` atoms (:data:`ATOM_BUCKETS`, then
    the next multiple of 32)."""
    for b in ATOM_BUCKETS:
        if num_atoms <= b:
            return b
    return -(-num_atoms // 32) * 32


def frame_bucket(num_frames: int) -> int:
    """The padded frame count of a call with ``num_frames`` frames (the next power of two)."""
    return 1 << max(num_frames - 1, 0).bit_length()


@dataclasses.dataclass(eq=False)
class Potential:
    """A trained molecular model as functions of positions (module docstring).

    Attributes:
      model: the Flax module (built by the model's registry spec).
      variables: ``{"params": tree, "batch_stats": {collection: tree}}`` of one seed.
      spec: the model's :class:`~geonorm_jax.models.registry.ModelSpec`.
      atomic_numbers: ``[A]`` of the training molecule (the default of the calls).
      info: the run's task info (molecule, N̄, shift, scale, cutoff, ``energy_unit``, ...).
      seed: the training seed whose parameters these are.
      dtype: float32 or float64.
      run_dir: where it came from (None if built directly).
      frames: ``{split: positions [S, A, 3]}`` of the run's data (MD starts, reference bond
        lengths and h(r)); empty if built directly.
    """

    model: Any
    variables: dict
    spec: Any
    atomic_numbers: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)
    seed: int | None = None
    dtype: Any = jnp.float32
    run_dir: Path | None = None
    frames: dict = dataclasses.field(default_factory=dict)
    compile_count: int = 0

    def __post_init__(self):
        dtype = jnp.dtype(self.dtype)
        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("dtype float64: enable it first with jax.config.update("
                             "'jax_enable_x64', True); received dtype float64 without x64")
        if dtype not in (jnp.float32, jnp.float64):
            raise ValueError(f"dtype: expected float32 or float64; received {dtype}")
        self.dtype = dtype
        self.variables = jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            self.variables)
        self.atomic_numbers = np.asarray(self.atomic_numbers, np.int32)
        _ = self.to_ev  # an unknown unit fails here, not at the first call

    @property
    def to_ev(self) -> float:
        """eV per unit of the model's outputs (1 for eV, 0.0434 for kcal/mol)."""
        from geonorm_jax.data.molecules.units import KCAL_PER_MOL_EV

        unit = self.info.get("energy_unit", "eV")
        factors = {"eV": 1.0, "kcal/mol": KCAL_PER_MOL_EV}
        if unit not in factors:
            raise ValueError(f"info['energy_unit']: expected one of {sorted(factors)}; "
                             f"received {unit!r}")
        return factors[unit]

    # -------------------------------------------------------------------------------------
    def _full(self) -> dict:
        return {"params": self.variables["params"], **self.variables.get("batch_stats", {})}

    def energy_fn(self, atomic_numbers=None):
        """``positions [A, 3] -> E`` (eV) of one molecule, traceable (``jax_md``'s
        ``energy_fn``)."""
        from geonorm_jax.models.predict import potential_graph

        z = self._numbers(atomic_numbers)
        full = self._full()

        def energy(positions, **unused):
            batch = {"positions": positions[None].astype(self.dtype), "atomic_numbers": z[None]}
            return self.to_ev * self.model.apply(full, potential_graph(self.model, batch))[0]

        return energy

    def energy_forces_fn(self, atomic_numbers=None):
        """``positions [A, 3] -> (E [], F [A, 3])``, traceable: one model evaluation and its
        gradient."""
        energy = self.energy_fn(atomic_numbers)

        def energy_forces(positions):
            e, g = jax.value_and_grad(energy)(positions)
            return e, -g

        return energy_forces

    @functools.cached_property
    def _batched(self):
        def run(variables, positions, numbers):
            self.compile_count += 1  # runs while tracing: once per compilation
            batch = {"positions": positions, "atomic_numbers": numbers}
            pred, _ = self.spec.predict(self.model, variables, batch, False)
            return self.to_ev * pred["energy"], self.to_ev * pred["forces"]

        return xla.jit(run)

    def energy_and_forces(self, positions, atomic_numbers=None):
        """Energies (eV) and forces ``-dE/dx`` (eV/Å) of one frame ``[A, 3]`` or of frames
        ``[B, A, 3]``, padded to size buckets (module docstring) and jitted.

        Raises:
          ValueError: positions not ``[A, 3]`` / ``[B, A, 3]``, or atomic numbers of another
            length (both named).
        """
        pos = np.asarray(positions)
        single = pos.ndim == 2
        if single:
            pos = pos[None]
        if pos.ndim != 3 or pos.shape[-1] != 3:
            raise ValueError(f"positions: expected [A, 3] or [B, A, 3] (Å); received shape "
                             f"{np.shape(positions)}")
        b, a, _ = pos.shape
        z = np.asarray(self._numbers(atomic_numbers, a))
        z = np.broadcast_to(z, (b, a)) if z.ndim == 1 else z
        if z.shape != (b, a):
            raise ValueError(f"atomic_numbers: expected [{a}] or [{b}, {a}]; received shape "
                             f"{z.shape}")
        nb, na = frame_bucket(b), atom_bucket(a)
        p = np.zeros((nb, na, 3), self.dtype)
        p[:b, :a] = pos
        # padded atoms sit far apart from everything (and masked by atomic number 0)
        p[:, a:] = 1e3 * (1 + np.arange(na - a))[None, :, None]
        zz = np.zeros((nb, na), np.int32)
        zz[:b, :a] = z
        e, f = self._batched(self.variables, jnp.asarray(p), jnp.asarray(zz))
        e, f = e[:b], f[:b, :a]
        return (e[0], f[0]) if single else (e, f)

    def _numbers(self, atomic_numbers, num_atoms: int | None = None):
        z = self.atomic_numbers if atomic_numbers is None else np.asarray(atomic_numbers)
        if num_atoms is not None and z.shape[-1] != num_atoms:
            raise ValueError(f"atomic_numbers: expected {num_atoms} entries (one per atom of "
                             f"the positions); received {z.shape[-1]}")
        if z.size and (z.min() < 1 or z.max() > 118):
            raise ValueError(f"atomic_numbers: expected values in 1..118; received "
                             f"{sorted(set(z.ravel().tolist()))}")
        return jnp.asarray(z, jnp.int32)

    @property
    def cutoff(self) -> float:
        """The model's cutoff (Å)."""
        return float(getattr(self.model, self.spec.knobs["cutoff"][0]))


def load_potential(run_dir: str | Path, *, seed: int | None = None, dtype=jnp.float32,
                   data_dir=None, cache_dir=None) -> Potential:
    """The best-validation potential of a molecular run (module docstring).

    Args:
      run_dir: a run directory written by ``geonorm-jax train`` (task ``molecules``).
      seed: which of the run's seeds (default: the first).
      dtype: ``jnp.float32`` (training precision) or ``jnp.float64`` (needs x64).
      data_dir, cache_dir: where the run's data is, as for ``geonorm-jax eval``.

    Raises:
      ValueError: not a molecular run, an unknown seed, or no checkpoint (named).
    """
    from geonorm_jax.train.eval_run import best_variables
    from geonorm_jax.train.rundir import check_resume
    from geonorm_jax.train.setup import build

    run_dir = Path(run_dir)
    config = check_resume(run_dir, None)
    if config.task != "molecules":
        raise ValueError(f"run directory {str(run_dir)!r}: expected a molecular run (task "
                         f"'molecules'); this one trains task {config.task!r}")
    seeds = list(config.train.seeds)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ValueError(f"seed: expected one of the run's seeds {seeds}; received {seed!r}")
    i = seeds.index(seed)
    s = build(config, data_dir=data_dir, cache_dir=cache_dir)
    best, _ = best_variables(s, run_dir)
    params = s.flat.unravel(jnp.asarray(best["params"][i]))
    batch_stats = jax.tree.map(lambda x: x[i], best["batch_stats"])
    return Potential(model=s.model, variables={"params": params, "batch_stats": batch_stats},
                     spec=s.task.spec, atomic_numbers=np.asarray(s.info["atomic_numbers"]),
                     info=dict(s.info), seed=seed, dtype=dtype, run_dir=run_dir,
                     frames={k: np.asarray(v["positions"]) for k, v in s.data.items()})
