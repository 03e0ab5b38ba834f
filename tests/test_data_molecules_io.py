"""Molecular data without xTB: MolecularData validation, MD17 / revised MD17 loaders (units),
seeded rMD17-style splits."""

import numpy as np
import pytest

from geonorm_jax.data.molecules import (
    KCAL_PER_MOL_EV,
    MoleculeConfig,
    detect_layout,
    load_md17,
    molecular_data,
    read_index_file,
    split_data,
    split_indices,
)


def _frames(rng, f=7, a=4):
    z = np.array([6, 8, 1, 1])[:a]
    r = rng.normal(size=(f, a, 3))
    e = rng.normal(size=f) * 10 - 1000.0
    force = rng.normal(size=(f, a, 3))
    return z, r, e, force


def test_kcal_per_mol_factor_is_exact_si_value():
    # 4.184 kJ/mol divided by the Faraday constant N_A e (exact since SI 2019).
    faraday = 6.02214076e23 * 1.602176634e-19
    assert KCAL_PER_MOL_EV == pytest.approx(4184.0 / faraday, rel=1e-15)
    assert abs(KCAL_PER_MOL_EV - 0.0433641) < 1e-7


def test_md17_layout_converts_kcal_to_ev(tmp_path):
    rng = np.random.default_rng(0)
    z, r, e, f = _frames(rng)
    path = tmp_path / "md17_tiny.npz"
    np.savez(
        path,
        R=r,
        E=e[:, None],
        F=f,
        z=z,
        name=np.str_("tiny"),
        theory=np.str_("PBE+TS"),
        r_unit=np.str_("Ang"),
        e_unit=np.str_("kcal/mol"),
    )
    data = load_md17(path)
    assert data.meta["layout"] == "md17" and data.meta["molecule"] == "tiny"
    np.testing.assert_allclose(data.energies, e * KCAL_PER_MOL_EV, rtol=1e-15)
    np.testing.assert_allclose(data.forces, f * KCAL_PER_MOL_EV, rtol=1e-15)
    np.testing.assert_array_equal(data.positions, r)
    np.testing.assert_array_equal(data.atomic_numbers, z)
    assert data.energies.shape == (7,) and data.positions.dtype == np.float64


def test_rmd17_layout_and_indices(tmp_path):
    rng = np.random.default_rng(1)
    z, r, e, f = _frames(rng)
    path = tmp_path / "rmd17_tiny.npz"
    np.savez(
        path,
        coords=r,
        energies=e,
        forces=f,
        nuclear_charges=z,
        old_indices=np.arange(7),
        old_energies=e,
        old_forces=f,
    )
    data = load_md17(path, indices=np.array([5, 1]))
    assert data.meta["layout"] == "rmd17"
    np.testing.assert_allclose(data.energies, e[[5, 1]] * KCAL_PER_MOL_EV, rtol=1e-15)
    np.testing.assert_allclose(data.forces, f[[5, 1]] * KCAL_PER_MOL_EV, rtol=1e-15)
    np.testing.assert_array_equal(data.positions, r[[5, 1]])


def test_md17_energies_already_in_ev_are_not_converted(tmp_path):
    rng = np.random.default_rng(2)
    z, r, e, f = _frames(rng)
    path = tmp_path / "md17_ev.npz"
    np.savez(path, R=r, E=e, F=f, z=z, e_unit=np.str_("eV"))
    np.testing.assert_allclose(load_md17(path).energies, e)


def test_md17_loader_errors(tmp_path):
    rng = np.random.default_rng(3)
    z, r, e, f = _frames(rng)
    bad = tmp_path / "bad.npz"
    np.savez(bad, positions=r)
    with pytest.raises(ValueError, match="expected members"):
        load_md17(bad)
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, R=r, E=e[:5], F=f, z=z)
    with pytest.raises(ValueError, match=r"energies must have shape \[7\].*got shape \(5,\)"):
        load_md17(shapes)
    units = tmp_path / "units.npz"
    np.savez(units, R=r, E=e, F=f, z=z, e_unit=np.str_("hartree"))
    with pytest.raises(ValueError, match="e_unit"):
        load_md17(units)
    rmd = tmp_path / "rmd.npz"
    np.savez(rmd, coords=r, energies=e, forces=f, nuclear_charges=z)
    with pytest.raises(ValueError, match="requested layout 'md17'"):
        load_md17(rmd, layout="md17")
    with pytest.raises(FileNotFoundError):
        load_md17(tmp_path / "missing.npz")
    assert detect_layout(["R", "E", "F", "z"]) == "md17"


def test_molecular_data_shape_errors():
    rng = np.random.default_rng(4)
    z, r, e, f = _frames(rng)
    data = molecular_data(r, e, f, z)
    assert data.num_frames == 7 and data.num_atoms == 4
    with pytest.raises(ValueError, match=r"positions must have shape \[F, 4, 3\].*\(7, 3, 3\)"):
        molecular_data(r[:, :3], e, f, z)
    with pytest.raises(ValueError, match=r"forces must have shape \[7, 4, 3\].*\(7, 4, 2\)"):
        molecular_data(r, e, f[..., :2], z)
    with pytest.raises(ValueError, match=r"atomic_numbers must have shape \[A\]"):
        molecular_data(r, e, f, z[None])
    with pytest.raises(ValueError, match="1..118"):
        molecular_data(r, e, f, np.array([0, 8, 1, 1]))
    with pytest.raises(ValueError, match="non-finite"):
        molecular_data(r, np.where(np.arange(7) == 3, np.nan, e), f, z)


def test_splits_are_seeded_disjoint_and_sized():
    a = split_indices(2000, seed=0)
    b = split_indices(2000, seed=0)
    c = split_indices(2000, seed=1)
    assert {k: v.size for k, v in a.items()} == {"train": 1000, "valid": 50, "test": 950}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["train"], c["train"])
    union = np.concatenate(list(a.values()))
    assert np.unique(union).size == union.size == 2000
    big = split_indices(5000, seed=0)
    assert big["test"].size == 1000  # capped as in the rMD17 split files
    assert np.intersect1d(big["train"], big["test"]).size == 0


def test_split_data_and_errors():
    rng = np.random.default_rng(5)
    z, r, e, f = _frames(rng, f=20)
    parts = split_data(molecular_data(r, e, f, z), train=10, valid=3, test=4, seed=2)
    idx = split_indices(20, train=10, valid=3, test=4, seed=2)
    np.testing.assert_array_equal(parts["valid"].energies, e[idx["valid"]])
    assert parts["test"].positions.shape == (4, 4, 3) and parts["train"].meta["split"] == "train"
    with pytest.raises(ValueError, match=r"train \(1000\) \+ valid \(50\) = 1050 exceeds"):
        split_indices(1000)
    with pytest.raises(ValueError, match="exceeds the 20 frames"):
        split_indices(20, train=10, valid=3, test=8)
    with pytest.raises(ValueError, match="train must be >= 1"):
        split_indices(20, train=0)


def test_molecule_config_validation_and_key():
    c = MoleculeConfig()
    assert c.frames == 2000 and c.temperature == 500.0 and sum(c.frames_per_trajectory()) == 2000
    assert MoleculeConfig(frames=10, trajectories=3).frames_per_trajectory() == [4, 3, 3]
    assert c.cache_key() != MoleculeConfig(stride=c.stride + 1).cache_key()
    assert c.dataset_name().startswith("md17-xtb_uracil_seed0_")
    with pytest.raises(ValueError, match="molecule must be one of"):
        MoleculeConfig(molecule="benzene-x")
    with pytest.raises(ValueError, match="frames must be an integer >= 1, got 0"):
        MoleculeConfig(frames=0)
    with pytest.raises(ValueError, match="friction"):
        MoleculeConfig(friction=-1.0)
    with pytest.raises(ValueError, match="trajectories"):
        MoleculeConfig(frames=2, trajectories=3)


def test_read_rmd17_index_file(tmp_path):
    path = tmp_path / "index_train_01.csv"
    path.write_text("12\n3\n\n7\n")
    np.testing.assert_array_equal(read_index_file(path), [12, 3, 7])
    bad = tmp_path / "bad.csv"
    bad.write_text("1\nx2\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: expected a non-negative integer"):
        read_index_file(bad)
