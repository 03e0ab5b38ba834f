"""``md17-dft``: PySCF PBE labels of the md17-xtb frames (water, sto-3g, a few frames, so each
test takes seconds): the calculator against PySCF called directly and against central
differences, the cache, resume and hash checks, and the command line."""

import json

import numpy as np
import pytest

pytest.importorskip("pyscf")
pytest.importorskip("tblite")
pytest.importorskip("rdkit")
pytest.importorskip("ase")

from geonorm_jax.data.molecules import (  # noqa: E402
    MoleculeConfig,
    dft_files,  # noqa: E402
    get_molecular_dataset,
    load_molecular_dataset,
)
from geonorm_jax.data.molecules.dft import DFTConfig, DFTError, PySCFDFT  # noqa: E402
from geonorm_jax.data.molecules.sources import (  # noqa: E402
    SOURCES,
    generated_config,
    generated_directory,
)
from geonorm_jax.data.molecules.structures import embed  # noqa: E402
from geonorm_jax.data.molecules.units import BOHR_ANGSTROM, HARTREE_EV  # noqa: E402

TINY = dict(molecule="water", frames=6, trajectories=2, stride=4, equilibration=6)
SMALL = dict(basis="sto-3g", conv_tol=1e-10, grid_level=1)


def tiny_config(**kwargs) -> DFTConfig:
    return DFTConfig(geometry=MoleculeConfig(**TINY), **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def water():
    z, r = embed("O", seed=0)  # not relaxed: the forces are large
    return z, r + np.array([[0.0, 0.0, 0.05], [0.03, 0.0, 0.0], [0.0, -0.04, 0.0]])


def test_energy_and_forces_equal_pyscf_called_directly(water):
    from pyscf import dft, gto

    z, r = water
    energy, forces = PySCFDFT(z, basis="sto-3g", conv_tol=1e-10, grid_level=1, threads=1)(r)
    mol = gto.M(atom=[(int(a), tuple(p)) for a, p in zip(z, r, strict=True)], basis="sto-3g",
                unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc, mf.conv_tol, mf.grids.level = "PBE", 1e-10, 1
    mf = mf.density_fit()
    e_ref = mf.kernel()
    g = mf.nuc_grad_method()
    g.grid_response = True
    grad = g.kernel()
    assert energy == pytest.approx(e_ref * HARTREE_EV, abs=1e-7)
    np.testing.assert_allclose(forces, -grad * HARTREE_EV / BOHR_ANGSTROM, atol=1e-6)
    assert np.abs(forces).max() > 0.1  # a real test: not near a minimum
    assert abs(energy) > 1e3  # eV: water's total PBE energy is about -2.05e3 eV


def test_forces_are_central_differences_of_the_energy(water):
    z, r = water
    calc = PySCFDFT(z, basis="sto-3g", conv_tol=1e-12, grid_level=1, threads=1)
    _, forces = calc(r)
    h = 1e-3  # Å
    fd = []
    for i, k in ((0, 1), (1, 0), (2, 1)):  # the largest components, one per atom
        plus, minus = r.copy(), r.copy()
        plus[i, k] += h
        minus[i, k] -= h
        fd.append((forces[i, k], -(calc(plus)[0] - calc(minus)[0]) / (2 * h)))
    analytic, numeric = np.array(fd).T
    np.testing.assert_allclose(analytic, numeric, atol=2e-4)
    assert np.abs(analytic).min() > 0.1


def test_bad_input_is_one_clear_error(water):
    z, r = water
    with pytest.raises(ValueError, match=r"positions must have shape \(3, 3\).*\(2, 3\)"):
        PySCFDFT(z, basis="sto-3g", threads=1)(r[:2])
    with pytest.raises(DFTError, match="not finite"):
        PySCFDFT(z, basis="sto-3g", threads=1)(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="atomic_numbers must be a 1-D integer array"):
        PySCFDFT(np.array([8.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="xc must be one of .* got 'LDA9'"):
        DFTConfig(xc="LDA9")
    with pytest.raises(ValueError, match=r"conv_tol must be .* \(0, 1e-5\] Hartree, got 0.1"):
        DFTConfig(conv_tol=0.1)
    with pytest.raises(ValueError, match="grid_level must be an integer in 0..9, got 12"):
        DFTConfig(grid_level=12)


def test_config_cache_key_and_round_trip():
    a, b = tiny_config(), tiny_config(grid_level=4)
    assert a.cache_key() != b.cache_key()
    assert a.dataset_name().startswith("md17-dft_water_seed0_")
    assert DFTConfig.from_dict(json.loads(json.dumps(a.generation_dict()))) == a
    other = DFTConfig(geometry=MoleculeConfig(**dict(TINY, seed=1)), **SMALL)
    assert other.cache_key() != a.cache_key()
    assert set(SOURCES) == {"md17-xtb", "md17-dft"}
    assert generated_config("md17-dft", "water", 6, 0, trajectories=2, stride=4,
                            equilibration=6, **SMALL) == a


def test_generation_labels_the_xtb_geometries_and_is_cached(tmp_path, monkeypatch):
    config = tiny_config()
    path = generated_directory("md17-dft", config, tmp_path, workers=1, threads=1,
                               chunk_frames=4)
    data = load_molecular_dataset(path)
    xtb = load_molecular_dataset(get_molecular_dataset(config.geometry, tmp_path))
    np.testing.assert_array_equal(data.positions, xtb.positions)  # the same geometries
    assert data.meta["dataset"] == "md17-dft" and data.meta["format"] == "geonorm-jax md17-dft"
    assert data.meta["units"]["energies"] == "eV"
    assert not (path / "chunks").exists()
    calc = PySCFDFT.from_config(data.atomic_numbers, config, threads=1)
    for k in (0, 5):
        e, f = calc(data.positions[k])
        assert data.energies[k] == pytest.approx(e, abs=1e-6)
        np.testing.assert_allclose(data.forces[k], f, atol=1e-5)
    # a second request is a cache hit: nothing is labelled
    monkeypatch.setattr(dft_files, "run_chunk", lambda task: pytest.fail("recomputed"))
    assert generated_directory("md17-dft", config, tmp_path, workers=1, threads=1) == path


def test_removed_chunk_is_recomputed_and_altered_chunk_rejected(tmp_path, monkeypatch):
    config = tiny_config()
    ref_dir = tmp_path / "ref"
    dft_files.generate_dft_dataset(config, ref_dir, cache_dir=tmp_path, workers=1,
                                   threads=1, chunk_frames=2, keep_chunks=True)
    ref = load_molecular_dataset(ref_dir)
    chunks = ref_dir / "chunks"
    names = sorted(p.name for p in chunks.glob("f*.npz"))
    assert names == ["f000000_000002.npz", "f000002_000004.npz", "f000004_000006.npz"]
    (chunks / names[0]).unlink()  # removed
    with np.load(chunks / names[1]) as npz:  # altered: a label changed, the hash kept
        arrays = {k: npz[k] for k in npz.files}
    arrays["energies"] = arrays["energies"] + 1e-3
    np.savez(chunks / names[1], **arrays)
    assert dft_files.valid_chunk(chunks / names[1], config.cache_key(),
                                 arrays["positions"]) is None
    assert dft_files.valid_chunk(chunks / names[2], config.cache_key(),
                                 ref.positions[4:6]) is not None
    assert dft_files.valid_chunk(chunks / names[2], tiny_config(grid_level=4).cache_key(),
                                 ref.positions[4:6]) is None  # another configuration's
    ran = []
    real = dft_files.run_chunk
    monkeypatch.setattr(dft_files, "run_chunk", lambda task: ran.append(task["start"])
                        or real(task))
    report = dft_files.generate_dft_dataset(config, ref_dir, cache_dir=tmp_path, workers=1,
                                            threads=1, chunk_frames=2)
    assert sorted(ran) == [0, 2] and report["resumed_frames"] == 2
    again = load_molecular_dataset(ref_dir)
    np.testing.assert_allclose(again.energies, ref.energies, rtol=0, atol=1e-8)
    np.testing.assert_allclose(again.forces, ref.forces, rtol=0, atol=1e-7)


def test_cli_generate_and_info(tmp_path, capsys):
    from geonorm_jax.cli import main

    argv = ["data", "generate", "--dataset", "md17-dft", "--molecule", "water", "--frames", "2",
            "--trajectories", "1", "--stride", "2", "--equilibration", "2", "--basis", "sto-3g",
            "--workers", "1", "--threads", "1", "--no-progress", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "frames/s" in lines[-1] and "PBE/sto-3g, density fitting" in lines[-1]
    directory = lines[-2]
    assert "md17-dft_water_seed0_" in directory
    assert main(argv) == 0
    assert "already generated" in capsys.readouterr().out
    assert main(["data", "info", directory]) == 0
    text = capsys.readouterr().out
    assert "md17-dft: water" in text and "verified" in text


@pytest.mark.slow
def test_two_worker_processes_give_the_same_labels(tmp_path):
    config = tiny_config()
    one = dft_files.get_dft_dataset(config, tmp_path / "a", workers=1, threads=1,
                                    chunk_frames=2)
    two = dft_files.get_dft_dataset(config, tmp_path / "b", workers=2, threads=1,
                                    chunk_frames=2)
    a, b = load_molecular_dataset(one), load_molecular_dataset(two)
    np.testing.assert_allclose(a.energies, b.energies, rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=1e-7)
