r"""The molecular energy-and-force task (the survey's Section 4): a registered potential
(Allegro, SchNet, GemNet-T or a user's own, :mod:`geonorm_jax.models.registry`) on MD frames
of one molecule.

Data (``config.molecules``, :class:`~geonorm_jax.train.sections.MolecularTaskConfig`):
GFN2-xTB Langevin frames (``md17-xtb``) or their PBE/def2-SVP relabelling (``md17-dft``),
generated and cached (:data:`geonorm_jax.data.molecules.sources.SOURCES`), a generated dataset
directory
(``data_dir``), or a published MD17 / revised MD17 file (``dataset="file"``, ``data_file``).
Split at random as in the rMD17 protocol (1000 / 50 / the rest up to 1000, seeded). Arrays
per split, ``S`` frames of ``A`` atoms, float32 except the species: ``positions [S, A, 3]``
(Å), ``energies [S]`` (eV), ``forces [S, A, 3]`` (eV/Å), ``atomic_numbers [S, A]`` int32.

Energy precision: with ``molecules.target_norm`` (and a model that takes ``species_shift``),
``energies`` holds the residuals ``E - sum_i mu_{Z_i}``, computed in float64 from the float64
totals and the float64 shift and only then cast to float32; the module trained
(:meth:`MolecularTask.training_model`) is the model without its shift, so the loss and the
metrics compare residuals and a constant added to every energy (|E| of 1e4-1e5 eV in DFT
files) changes nothing. The model users get (``Setup.model``, ``load_potential``) adds the
shift back and predicts total energies; in float32 those carry the remaining floor, a
rounding of about ``|E| * 6e-8`` (4 meV at 1e5 eV; ``dtype=float64`` in ``load_potential``
removes it). Without ``target_norm`` the targets are the totals in float32, with that floor.
``molecules.energy_unit = "kcal/mol"`` trains on energies in kcal/mol and forces in kcal/mol/Å
(the MD17 files' units; the loss in their squares), converted once after loading.

Data checks before training (:func:`check_geometry`): coincident atoms (closer than
:data:`MIN_DISTANCE`), named by frame and atoms, and a cutoff under which an atom never has a
neighbour in the training frames, named with the closest distance.

Fitted on the training split only, recorded in the run's ``info``: ``avg_num_neighbors``
``N̄`` within the cutoff the model receives (one value: :func:`~.base.resolve_model`), the
per-species shift ``mu_Z`` (least squares of the energies on the species counts) and the
scale ``sigma`` (force RMS) (:mod:`geonorm_jax.models.target_norms`). They reach the models
that declare them as arguments: ``avg_num_neighbors`` (Allegro), ``species_shift`` and
``species_scale`` (``molecules.target_norm``: ``E_i = sigma E_i^net + mu_Z``) and
``max_atomic_number``. The architecture's own normalization is the one switch
``model.builtin_norm`` (:class:`~geonorm_jax.models.registry.ModelSpec`).

Prediction (the model spec's ``predict``, :mod:`geonorm_jax.models.predict`): ``energy [B]``
(a sum of atomic energies) and ``forces [B, A, 3] = -dE/dx``, on a graph rebuilt inside the
step from the current positions. Loss, with ``A_b`` real atoms per frame::

    L = lambda_E mean_b ((E_b - E_b^ref) / A_b)^2 + lambda_F mean_{b, i, a} (F_bia - F_bia^ref)^2

in eV^2 (per-atom energy) and eV^2/Å^2 (forces); the per-sample ``mse`` is the same sum for
one frame. Metrics: ``energy_mae`` (meV per frame) and ``force_mae`` (meV/Å, mean over atoms
and components).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from geonorm_jax.train.config import RunConfig
from geonorm_jax.train.tasks.base import Task, model_spec, resolve_model

__all__ = ["MolecularTask", "model_kwargs", "model_cutoff", "data_statistics",
           "check_geometry", "MIN_DISTANCE"]


def data_statistics(config: RunConfig, info: dict) -> dict:
    """The training-data statistics offered to the model's constructor (each reaches the
    model only if it declares an argument of that name): the species table size, ``N̄`` and,
    with ``molecules.target_norm``, the per-species shift and scale."""
    out = {"max_atomic_number": int(info.get("max_z", 118))}
    if "avg_num_neighbors" in info:
        out["avg_num_neighbors"] = info["avg_num_neighbors"]
    target = config.molecules.target_norm
    if target and "species_shift" in info:  # "shift": the shift only, sigma = 1
        out.update(species_shift=tuple(info["species_shift"]),
                   species_scale=1.0 if target == "shift" else float(info["species_scale"]))
    return out


def model_kwargs(config: RunConfig, info: dict) -> dict:
    """The constructor arguments of ``config.model`` on data described by ``info``
    (:func:`~.base.resolve_model` with :func:`data_statistics`)."""
    return resolve_model(config, data_statistics(config, info))


def model_cutoff(config: RunConfig) -> float:
    """The cutoff the model of ``config`` receives (``model.cutoff``, its alias in
    ``model.model_kwargs``, or the published value): one value for the model and for the
    neighbour statistics fitted on the training data."""
    cutoff = model_spec(config).cutoff_of(resolve_model(config))
    if not (isinstance(cutoff, int | float) and np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"model.cutoff: expected a positive number of Å, got {cutoff!r}")
    return float(cutoff)


#: atoms closer than this (Å) are refused as coincident: no chemical bond is shorter than
#: about 0.74 Å (H2), so such a pair is a duplicated atom or coordinates in other units
MIN_DISTANCE = 0.1


def check_geometry(splits: dict, indices: dict, atomic_numbers, cutoff: float,
                   where: str, chunk: int = 256) -> None:
    """The data checks before training that the model cannot make inside ``jit``.

    * Every pair of atoms of every frame (all splits) is at least :data:`MIN_DISTANCE` apart:
      coincident atoms have no direction between them and give NaN (``sqrt(0)``) in the
      models' gradients, which the trainer would otherwise report as a model divergence.
    * Within the model's ``cutoff``, every atom of the training frames has a neighbour in at
      least one frame: an atom that never has one is invisible to every interaction (SchNet
      trains on a graph without edges, GemNet's scale fit divides by zero).

    ``splits`` are the split's frames, ``indices`` their frame numbers in the data (named in
    the message).

    Raises:
      ValueError: one line naming the split, the frame, the atoms and the distance (or the
        cutoff, the atom and the closest it ever comes to another atom).
    """
    z = np.asarray(atomic_numbers)
    a = z.shape[0]
    off = np.eye(a, dtype=bool)
    nearest = np.full(a, np.inf)  # per atom: the closest it comes to another (training)
    for name, split in splits.items():
        pos = np.asarray(split.positions, np.float64)
        for start in range(0, pos.shape[0], chunk):
            p = pos[start : start + chunk]
            d = np.sqrt(np.sum(np.square(p[:, :, None] - p[:, None, :]), axis=-1))
            d[:, off] = np.inf
            if d.size == 0:
                continue
            k, i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[k, i, j] < MIN_DISTANCE:
                frame = int(indices[name][start + k])
                raise ValueError(
                    f"{where}: atoms {i} (Z={z[i]}) and {j} (Z={z[j]}) of frame {frame} "
                    f"({name} split) are {d[k, i, j]:.3g} Å apart (coincident: the model's "
                    f"geometry is undefined there); no two atoms are closer than {MIN_DISTANCE}"
                    " Å in a molecule: a duplicated atom, or coordinates not in Å?")
            if name == "train":
                nearest = np.minimum(nearest, d.min(axis=2).min(axis=0))
    lonely = np.flatnonzero(~(nearest <= cutoff))
    if lonely.size:
        i = int(lonely[np.argmax(nearest[lonely])]) if np.isfinite(nearest[lonely]).any() \
            else int(lonely[0])
        closest = (f"the closest it comes to another atom is {nearest[i]:.3g} Å"
                   if np.isfinite(nearest[i]) else "the molecule has no other atom")
        more = f" ({lonely.size} atoms in all)" if lonely.size > 1 else ""
        raise ValueError(
            f"model.cutoff {cutoff:g} Å: atom {i} (Z={z[i]}){more} has no neighbour within the "
            f"cutoff in any training frame of {where}; {closest}. The model would not see "
            "it interact; raise the cutoff above that distance")


def _frames(config: RunConfig, data_dir, cache_dir, progress):
    from geonorm_jax.data import molecules as mol

    mc = config.molecules
    if data_dir is not None:
        path = Path(data_dir)
        if not mol.is_molecular_dataset(path):
            raise ValueError(f"data directory {str(path)!r} is not a molecular dataset "
                             "(expected one written by `geonorm-jax data generate --dataset "
                             "md17-xtb` or `--dataset md17-dft`)")
        try:
            return mol.load_molecular_dataset(path)
        except ValueError as e:
            raise _located(e, path / "data.npz", f"data directory {str(path)!r}") from None
    if mc.dataset == "file":
        if mc.data_file is None:
            raise ValueError("molecules.data_file: expected an MD17 / rMD17 .npz file or an "
                             "extended XYZ (.xyz, .extxyz) file for dataset 'file'; "
                             "received null")
        path = Path(mc.data_file)
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".xyz", ".extxyz"):
            raise ValueError(f"molecules.data_file {path.name!r}: expected a file ending in "
                             "'.npz' (MD17 / revised MD17), '.xyz' or '.extxyz' (extended XYZ);"
                             f" received suffix {suffix or '(none)'!r}")
        if suffix != ".npz":
            try:
                return mol.load_extxyz(path)
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(f"molecules.data_file: {e}") from None
        try:
            return mol.load_md17(path)
        except FileNotFoundError as e:
            raise ValueError(f"molecules.data_file: {e}") from None
        except ValueError as e:
            raise _located(e, path, f"molecules.data_file {path.name!r}") from None
    from geonorm_jax.data.molecules.sources import generated_config, generated_directory

    try:
        generation = generated_config(mc.dataset, mc.molecule, mc.frames, mc.data_seed)
    except ValueError as e:
        raise ValueError(f"molecules: {e}") from None
    return mol.load_molecular_dataset(
        generated_directory(mc.dataset, generation, cache_dir, progress=progress))


def _in_unit(frames, unit: str):
    """``frames`` (eV, eV/Å) in ``unit`` (``molecules.energy_unit``: eV or kcal/mol)."""
    if unit == "eV":
        return frames
    from geonorm_jax.data.molecules import KCAL_PER_MOL_EV, MolecularData

    if unit != "kcal/mol":
        raise ValueError(f"molecules.energy_unit: expected 'eV' or 'kcal/mol', got {unit!r}")
    return MolecularData(frames.positions, frames.energies / KCAL_PER_MOL_EV,
                         frames.forces / KCAL_PER_MOL_EV, frames.atomic_numbers,
                         dict(frames.meta, energy_unit=unit))


def _located(error: ValueError, npz_path: Path, where: str) -> ValueError:
    """``error`` of a loader that found non-finite values, with the member and the first
    frame index holding them (read from the ``.npz`` file); other errors unchanged."""
    if "non-finite" not in str(error):
        return error
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            for member in npz.files:
                a = npz[member]
                if a.ndim == 0 or not np.issubdtype(a.dtype, np.floating):
                    continue
                bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
                if bad.any():
                    return ValueError(
                        f"{where}: member {member!r} has non-finite values at frame "
                        f"{int(np.argmax(bad))} ({int(bad.sum())} of {bad.size} frames "
                        "affected); the model cannot train on it (corrupt data?)")
    except (OSError, ValueError):
        pass
    return ValueError(f"{where}: {error}")


def _portable_source(source, dataset: str) -> str:
    """The data's source without machine paths: the cache directory's name for generated
    frames (it holds the generation hash), the file name for an MD17 file."""
    if not source:
        return dataset
    path = Path(str(source))
    return f"{path.parent.name}/{path.name}" if path.name == "data.npz" else path.name


def _provenance(meta: dict, dataset: str) -> dict:
    """Where the frames came from, for the run's ``data.json``: the portable source name,
    molecule, method, and the generated dataset's cache key and file hash (when present)."""
    keys = ("molecule", "method", "layout", "cache_key", "format_version", "file")
    return {"name": _portable_source(meta.get("source"), dataset), "dataset": dataset,
            **{k: meta[k] for k in keys if k in meta and _is_json(meta[k])}}


def _is_json(value) -> bool:
    try:
        import json

        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class MolecularTask(Task):
    """Energies and forces of molecular frames with a registered potential (module
    docstring)."""

    name = "molecules"
    metrics = ("energy_mae", "force_mae")
    metric_units = {"energy_mae": "meV", "force_mae": "meV/Å"}

    #: frames of the example batch that initializes the model (GemNet fits its scale factors
    #: on it; the authors fit on 16 batches of 32 molecules)
    init_samples = 32

    def __init__(self, spec=None, energy_weight: float = 1.0, force_weight: float = 1.0):
        super().__init__(spec)
        self.energy_weight = float(energy_weight)
        self.force_weight = float(force_weight)

    @classmethod
    def from_config(cls, config: RunConfig) -> MolecularTask:
        mc = config.molecules
        return cls(model_spec(config), energy_weight=mc.energy_weight,
                   force_weight=mc.force_weight)

    def check(self, config: RunConfig) -> None:
        mc = config.molecules
        for key in ("energy_weight", "force_weight"):
            value = getattr(mc, key)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"molecules.{key}: expected a number >= 0, got {value!r}")
        if mc.energy_weight == 0 and mc.force_weight == 0:
            raise ValueError("molecules.energy_weight, force_weight: expected at least one > 0")
        for key in ("train", "valid", "frames"):
            if getattr(mc, key) < 1:
                raise ValueError(f"molecules.{key}: expected an integer >= 1, got "
                                 f"{getattr(mc, key)!r}")
        if config.train.batch_size > mc.train:
            raise ValueError(f"train.batch_size: {config.train.batch_size} is larger than the "
                             f"number of training frames (molecules.train = {mc.train})")
        model_cutoff(config)  # a knob given twice, a bad cutoff
        # unknown model, norm, place or argument: built once on placeholder statistics
        self.build_model(config, {"avg_num_neighbors": 1.0, "max_z": 118})

    def load(self, config: RunConfig, *, data_dir=None, cache_dir=None, progress=False):
        from geonorm_jax.data.molecules import split_data
        from geonorm_jax.models import target_norms

        mc = config.molecules
        frames = _in_unit(_frames(config, data_dir, cache_dir, progress), mc.energy_unit)
        if mc.energy_unit != "eV":
            self.metric_units = {"energy_mae": "mkcal/mol", "force_mae": "mkcal/mol/Å"}
        try:
            splits = split_data(frames, train=mc.train, valid=mc.valid, test=mc.test,
                                seed=mc.split_seed)
        except ValueError as e:
            raise ValueError(f"molecules: {e}") from None
        if any(s.num_frames == 0 for s in splits.values()):
            empty = [k for k, s in splits.items() if s.num_frames == 0]
            raise ValueError(f"molecules: the {', '.join(empty)} split is empty (the data has "
                             f"{frames.num_frames} frames; lower molecules.train/valid)")
        z = frames.atomic_numbers
        # every frame, for the model's static capacities (GemNet-T's triplet budget)
        self._frames = (frames.positions, z)
        from geonorm_jax.data.molecules import split_indices
        from geonorm_jax.train.provenance import check_finite, data_hash

        where = f"molecular data ({_portable_source(frames.meta.get('source'), mc.dataset)})"
        check_finite({name: {"positions": s.positions, "energies": s.energies,
                             "forces": s.forces} for name, s in splits.items()},
                     where=where)
        cutoff = model_cutoff(config)
        indices = split_indices(frames.num_frames, train=mc.train, valid=mc.valid,
                                test=mc.test, seed=mc.split_seed)  # those of split_data
        check_geometry(splits, indices, z, cutoff, where)
        train = splits["train"]
        fit = target_norms.EnergyNormalization.fit(train.energies, train.forces, z)
        residual = self.predicts_residuals(config, fit)
        out, legacy = {}, {}
        for name, s in splits.items():
            energies = np.asarray(s.energies, np.float64)  # absolute, float64
            if residual:  # subtract the float64 shift first; only the residual is float32
                energies = energies - fit.reference_energy(
                    np.broadcast_to(z, (s.num_frames, z.shape[0])))
            out[name] = {
                "positions": jnp.asarray(s.positions, jnp.float32),
                "energies": jnp.asarray(energies.astype(np.float32)),
                "forces": jnp.asarray(s.forces, jnp.float32),
                "atomic_numbers": jnp.asarray(np.broadcast_to(z, (s.num_frames, z.shape[0])),
                                              jnp.int32),
            }
            legacy[name] = {**out[name], "energies": np.asarray(s.energies, np.float32)}
        # the hash of the data as stored before the targets were residuals (data.json of older
        # runs): check_provenance accepts it for those runs
        self.legacy_sha256 = data_hash(legacy) if residual else None
        info = {
            "molecule": frames.meta.get("molecule", mc.molecule),
            "source": _portable_source(frames.meta.get("source"), mc.dataset),
            "method": frames.meta.get("method"),
            "atoms": int(z.shape[0]),
            "atomic_numbers": [int(v) for v in z],
            "max_z": int(z.max()),
            "frames": {k: int(s.num_frames) for k, s in splits.items()},
            "cutoff": cutoff,
            "avg_num_neighbors": target_norms.avg_num_neighbors(train.positions, cutoff, z),
            "species_shift": [float(v) for v in fit.shift],
            "species_scale": float(fit.scale),
            "energy_mean": float(np.mean(train.energies)),
            "energy_std": float(np.std(train.energies)),
            "energy_targets": "residual" if residual else "total",
            "energy_unit": mc.energy_unit,
            "provenance": _provenance(frames.meta, mc.dataset),
        }
        return out, info

    @staticmethod
    def predicts_residuals(config: RunConfig, fit) -> bool:
        """True when the model adds the per-species shift itself (``molecules.target_norm``
        on and the model declares ``species_shift``): then the targets are stored as the
        float64 residuals ``E - sum_i mu_{Z_i}`` (cast to float32 only then) and the model
        trains without its shift (:meth:`training_model`)."""
        if not config.molecules.target_norm:
            return False
        stats = data_statistics(config, {"species_shift": list(fit.shift),
                                         "species_scale": 1.0, "avg_num_neighbors": 1.0})
        return "species_shift" in resolve_model(config, stats)

    def training_model(self, model, info: dict):
        """The module trained and evaluated: ``model`` (the one users get, predicting total
        energies) without its per-species shift when the targets are residuals
        (``info["energy_targets"] == "residual"``). Parameters are the same: the shift is a
        constant of the module, not a parameter."""
        if info.get("energy_targets") == "residual" and \
                getattr(model, "species_shift", None) is not None:
            return model.clone(species_shift=None)
        return model

    def build_model(self, config: RunConfig, info: dict):
        """The potential of ``config.model`` with the statistics of ``info``
        (:func:`model_kwargs`) and its catalogue norm at its place."""
        from geonorm_jax.models.checks import check_triplet_capacity
        from geonorm_jax.train.tasks.base import build_model

        self.spec = model_spec(config)
        model = build_model(config, data_statistics(config, info))
        if getattr(self, "_frames", None) is not None:  # a static capacity the data exceeds
            check_triplet_capacity(model, *self._frames)
        return model

    def _errors(self, pred, batch):
        mask = (batch["atomic_numbers"] > 0).astype(pred["forces"].dtype)  # [B, A]
        atoms = jnp.maximum(jnp.sum(mask, axis=1), 1.0)  # [B]
        e_err = (pred["energy"] - batch["energies"])  # [B]
        f_err = (pred["forces"] - batch["forces"]) * mask[..., None]  # [B, A, 3]
        return e_err, f_err, atoms

    def loss(self, pred, batch):
        e_err, f_err, atoms = self._errors(pred, batch)
        e_term = jnp.mean(jnp.square(e_err / atoms))
        f_term = jnp.sum(jnp.square(f_err)) / (3.0 * jnp.sum(atoms))
        return self.energy_weight * e_term + self.force_weight * f_term

    def sample_metrics(self, pred, batch):
        e_err, f_err, atoms = self._errors(pred, batch)
        f_sq = jnp.sum(jnp.square(f_err), axis=(1, 2)) / (3.0 * atoms)
        return {
            "mse": self.energy_weight * jnp.square(e_err / atoms) + self.force_weight * f_sq,
            "energy_mae": 1e3 * jnp.abs(e_err),
            "force_mae": 1e3 * jnp.sum(jnp.abs(f_err), axis=(1, 2)) / (3.0 * atoms),
        }

    def describe(self, info: dict) -> str:
        f = info["frames"]
        return (f"{info['molecule']} ({info['atoms']} atoms, {info['source']}): "
                f"{f['train']}/{f['valid']}/{f['test']} frames, N̄ = "
                f"{info['avg_num_neighbors']:.2f} within {info['cutoff']:g} Å")
