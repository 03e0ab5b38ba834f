"""Extended XYZ files: the writer's round trip through ``ase.io.read`` and ``load_extxyz``
(positions, energies, forces, velocities in Å/fs), kcal/mol files, the named errors, and
training SchNet on real GFN2-xTB water frames written as extxyz (``dataset="file"``)."""

import numpy as np
import pytest

pytest.importorskip("ase")

import ase  # noqa: E402
import ase.io  # noqa: E402
import ase.units  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from geonorm_jax.data.molecules import (  # noqa: E402
    KCAL_PER_MOL_EV,
    MolecularData,
    load_extxyz,
    write_extxyz,
)

Z = np.array([8, 1, 1])


def _frames(n=5, seed=0):
    rng = np.random.default_rng(seed)
    positions = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])
    positions = positions + 0.05 * rng.normal(size=(n, 3, 3))  # [F, A, 3] Å
    energies = -2080.0 + rng.normal(size=n)  # [F] eV
    forces = rng.normal(size=(n, 3, 3))  # [F, A, 3] eV/Å
    velocities = 0.01 * rng.normal(size=(n, 3, 3))  # [F, A, 3] Å/fs
    return positions, energies, forces, velocities


def _close(actual, expected, rtol=1e-6):
    """Equal to ``rtol`` relative to the array's scale (the file keeps 8 decimals)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) <= rtol * np.max(np.abs(expected))


def test_round_trip_through_ase_and_load_extxyz(tmp_path):
    positions, energies, forces, velocities = _frames()
    path = write_extxyz(tmp_path / "water.xyz", Z, positions, energies=energies,
                        forces=forces, velocities=velocities,
                        info={"method": "GFN2-xTB", "time": np.arange(5) * 2.0})
    assert path == tmp_path / "water.xyz"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no stray temporary

    images = ase.io.read(path, index=":")
    assert len(images) == 5
    for i, atoms in enumerate(images):
        assert list(atoms.numbers) == Z.tolist()
        _close(atoms.positions, positions[i])
        _close(atoms.get_potential_energy(), energies[i])
        _close(atoms.get_forces(), forces[i])
        _close(atoms.get_velocities() * ase.units.fs, velocities[i])  # back to Å/fs
        assert atoms.info["method"] == "GFN2-xTB" and atoms.info["time"] == 2.0 * i

    data = load_extxyz(path)
    assert isinstance(data, MolecularData) and data.num_frames == 5 and data.num_atoms == 3
    _close(data.positions, positions)
    _close(data.energies, energies)
    _close(data.forces, forces)
    assert data.atomic_numbers.tolist() == Z.tolist()
    assert data.meta["source"] == "water.xyz" and data.meta["layout"] == "extxyz"
    assert data.meta["method"] == "GFN2-xTB" and data.meta["molecule"] == "H2O"

    # append adds frames to the end
    write_extxyz(path, Z, positions[:2], energies=energies[:2], forces=forces[:2], append=True)
    longer = load_extxyz(path)
    assert longer.num_frames == 7
    _close(longer.forces[5:], forces[:2])


def test_kcal_per_mol_and_custom_keys(tmp_path):
    positions, energies, forces, _ = _frames(3, seed=1)
    images = []
    for i in range(3):
        atoms = ase.Atoms(numbers=Z, positions=positions[i])
        atoms.info["REF_energy"] = energies[i] / KCAL_PER_MOL_EV  # kcal/mol
        atoms.arrays["REF_forces"] = forces[i] / KCAL_PER_MOL_EV  # kcal/mol/Å
        images.append(atoms)
    path = tmp_path / "water_kcal.extxyz"
    ase.io.write(path, images, format="extxyz")
    data = load_extxyz(path, energy_key="REF_energy", forces_key="REF_forces",
                       energy_unit="kcal/mol")
    _close(data.energies, energies)
    _close(data.forces, forces)
    assert data.meta["file_units"]["energies"] == "kcal/mol"
    assert "method" not in data.meta
    with pytest.raises(ValueError, match="no energy"):
        load_extxyz(path)  # the default key is absent
    with pytest.raises(ValueError, match="energy_unit"):
        load_extxyz(path, energy_key="REF_energy", forces_key="REF_forces",
                    energy_unit="hartree")


def test_mixed_atomic_numbers_missing_forces_and_non_finite_name_the_frame(tmp_path):
    positions, energies, forces, _ = _frames(3, seed=2)
    images = []
    for i, numbers in enumerate(([8, 1, 1], [8, 1, 1], [7, 1, 1])):
        atoms = ase.Atoms(numbers=numbers, positions=positions[i])
        atoms.calc = SinglePointCalculator(atoms, energy=energies[i], forces=forces[i])
        images.append(atoms)
    mixed = tmp_path / "mixed.xyz"
    ase.io.write(mixed, images, format="extxyz")
    with pytest.raises(ValueError, match=r"frame 2 has atomic numbers \[7, 1, 1\], "
                                         r"expected \[8, 1, 1\]"):
        load_extxyz(mixed)

    no_forces = write_extxyz(tmp_path / "no_forces.xyz", Z, positions, energies=energies)
    with pytest.raises(ValueError, match="frame 0 has no forces"):
        load_extxyz(no_forces)

    bad = forces.copy()
    bad[1, 2, 0] = np.nan
    nan_file = write_extxyz(tmp_path / "nan.xyz", Z, positions, energies=energies, forces=bad)
    with pytest.raises(ValueError, match="frame 1: forces contains non-finite"):
        load_extxyz(nan_file)

    with pytest.raises(FileNotFoundError):
        load_extxyz(tmp_path / "absent.xyz")
    with pytest.raises(ValueError, match=r"forces must have shape \[3, 3, 3\]"):
        write_extxyz(tmp_path / "x.xyz", Z, positions, forces=forces[:, :2])
    with pytest.raises(ValueError, match="reserved"):
        write_extxyz(tmp_path / "x.xyz", Z, positions, info={"energy": 1.0})


def test_unknown_data_file_suffix_names_the_accepted_ones(tmp_path):
    from geonorm_jax import train
    from geonorm_jax.train import config as cfg

    base = cfg.preset("schnet-uracil")
    with pytest.raises(ValueError, match=r"'.npz'.*'.xyz' or '.extxyz'"):
        train.build(cfg.merge(base, {"molecules": {"dataset": "file",
                                                   "data_file": str(tmp_path / "w.pdb")}}))
    with pytest.raises(ValueError, match="molecules.data_file: .*no such extended XYZ"):
        train.build(cfg.merge(base, {"molecules": {"dataset": "file",
                                                   "data_file": str(tmp_path / "w.xyz")}}))


def test_schnet_trains_on_an_extxyz_file_of_xtb_water(tmp_path_factory, tmp_path):
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from geonorm_jax import train
    from geonorm_jax.data.molecules import MoleculeConfig, molecular_dataset
    from geonorm_jax.train import config as cfg
    from geonorm_jax.train.provenance import read_provenance

    root = tmp_path_factory.mktemp("water_xyz")
    data = molecular_dataset(MoleculeConfig(molecule="water", frames=24, trajectories=2,
                                            stride=4, equilibration=6), root / "cache")
    path = write_extxyz(root / "water.extxyz", data.atomic_numbers, data.positions,
                        energies=data.energies, forces=data.forces,
                        info={"method": data.meta.get("method", "GFN2-xTB")})
    loaded = load_extxyz(path)
    _close(loaded.energies, data.energies)
    _close(loaded.forces, data.forces)

    config = cfg.merge(cfg.preset("schnet-uracil"), {
        "molecules": {"dataset": "file", "data_file": str(path), "train": 12, "valid": 4,
                      "test": 8},
        "model": {"hidden": 8, "num_layers": 1, "model_kwargs": {"num_rbf": 8}},
        "train": {"epochs": 1, "batch_size": 4, "seeds": [0], "eval_every": 1,
                  "checkpoint_every": 1, "eval_batch_size": 8, "fast_compile": True},
    })
    summary = train.train(config, tmp_path / "run", progress=False)
    info = summary["task_info"]
    assert info["source"] == "water.extxyz" and info["atoms"] == 3
    assert info["frames"] == {"train": 12, "valid": 4, "test": 8}
    source = read_provenance(tmp_path / "run")["source"]
    assert source["name"] == "water.extxyz" and source["layout"] == "extxyz"
    records = train.read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1]
    for key in ("val_energy_mae", "test_energy_mae", "val_force_mae", "test_force_mae"):
        assert all(np.isfinite(records[-1][key]))
    assert np.isfinite(records[-1]["train_loss"]).all()
