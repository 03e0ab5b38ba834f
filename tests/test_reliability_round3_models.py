"""Reliability, round three (issue 27), the model / data side: coincident atoms, GemNet-T's
triplet budget and scale fit, the data checks before training, damaged MD17 files, the
generation settings and a full disk during ``data generate``."""

import errno
import functools
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_POS, ETHANOL_Z, ethanol_frames

from geonorm_jax.models import checks
from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models.allegro import Allegro
from geonorm_jax.models.gemnet import MAX_NEIGHBORS_LIMIT, GemNetT
from geonorm_jax.models.gemnet_scaling import fit_scale_factors
from geonorm_jax.models.schnet import SchNet

CUTOFF = 3.0
GEMNET = dict(num_blocks=1, emb_size_atom=8, emb_size_edge=8, emb_size_trip=4, emb_size_rbf=4,
              emb_size_cbf=4, emb_size_bil_trip=4, num_spherical=4, num_radial=4,
              cutoff=CUTOFF, max_atomic_number=9)
MODELS = {
    "schnet": lambda: SchNet(features=8, num_interactions=1, num_rbf=8, cutoff=CUTOFF,
                             max_atomic_number=9),
    "allegro": lambda: Allegro(num_bessel=4, num_layers=1, latent_dim=8, num_channels=2,
                               embed_dim=4, two_body_hidden=(8,), latent_hidden=(8,),
                               edge_energy_hidden=(4,), cutoff=CUTOFF, avg_num_neighbors=6.0,
                               max_atomic_number=9),
    "gemnet": lambda: GemNetT(**GEMNET, scale_factors=False),
}


def _coincident(frames=2):
    """Ethanol frames with atom 8 moved onto atom 2 (an O-H pair at distance exactly 0)."""
    pos = ethanol_frames(frames)
    pos[:, 8] = pos[:, 2]
    return pos


@functools.cache
def _energy_fn(name):
    model = MODELS[name]()
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    variables = jax.jit(model.init)(jax.random.key(0), g)

    @jax.jit
    def fn(pos):
        graph = mg.batch_frames(pos, ETHANOL_Z, CUTOFF)
        e, f = mg.energy_and_forces(model, variables, graph)
        return e, f

    return fn


# ------------------------------------------------------------------------- coincident atoms

@pytest.mark.parametrize("name", sorted(MODELS))
def test_coincident_atoms_give_finite_energies_and_forces(name):
    fn = _energy_fn(name)
    e, f = fn(jnp.asarray(_coincident(), jnp.float32))
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(f)), f"{name}: NaN at zero distance"
    # and the force-training gradient (forces differentiated again) stays finite
    g = jax.grad(lambda p: jnp.sum(fn(p)[1] ** 2))(jnp.asarray(_coincident(), jnp.float32))
    assert np.all(np.isfinite(g)), f"{name}: second derivatives not finite at zero distance"


def test_schnet_is_continuous_into_coincidence():
    """SchNet sees distances only: the energy at d = 0 is the limit d -> 0 (no jump)."""
    fn = _energy_fn("schnet")
    pos = _coincident()
    near = pos.copy()
    near[:, 8, 0] += 1e-6
    e0 = np.asarray(fn(jnp.asarray(pos))[0], np.float64)
    e1 = np.asarray(fn(jnp.asarray(near))[0], np.float64)
    np.testing.assert_allclose(e0, e1, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- GemNet-T's triplet budget

def _gemnet_setup(**kw):
    model = GemNetT(**{**GEMNET, **kw})
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, CUTOFF)
    return model, g, jax.jit(GemNetT(**GEMNET).init)(jax.random.key(0), g)


def test_triplet_overflow_under_jit_gives_nan_never_a_truncated_answer():
    model, g, variables = _gemnet_setup(max_neighbors=2)  # ethanol atoms have up to 8
    with pytest.raises(ValueError, match="expected at most max_neighbors = 2"):
        model.apply(variables, g)  # eagerly: one clear error
    e = jax.jit(model.apply)(variables, g)
    assert np.all(np.isnan(np.asarray(e))), "a truncated triplet table gave numbers"
    ok, _, _ = _gemnet_setup(max_neighbors=8)
    assert np.all(np.isfinite(np.asarray(jax.jit(ok.apply)(variables, g))))


def test_check_triplet_capacity_names_frame_atom_and_budget():
    frames = ethanol_frames(5)
    tight = GemNetT(**GEMNET, max_neighbors=2)
    with pytest.raises(ValueError, match=r"max_neighbors: frame \d+, atom \d+ has \d+ neigh"
                                         r"bours within the cutoff 3 Å; expected max_neigh"
                                         r"bors >= \d+ .* received 2"):
        checks.check_triplet_capacity(tight, frames, ETHANOL_Z)
    count = checks.check_triplet_capacity(GemNetT(**GEMNET), frames, ETHANOL_Z)
    assert 2 < count <= 8
    assert checks.check_triplet_capacity(GemNetT(**GEMNET, max_neighbors=count), frames,
                                         ETHANOL_Z) == count
    assert checks.check_triplet_capacity(MODELS["schnet"](), frames, ETHANOL_Z) is None
    # agrees with the model's own count on the same frames
    _, inter = jax.jit(lambda v, g: GemNetT(**GEMNET).apply(v, g, mutable=["intermediates"]))(
        _gemnet_setup()[2], mg.batch_frames(jnp.asarray(frames), ETHANOL_Z, CUTOFF))
    assert int(inter["intermediates"]["triplet_max_neighbors"][0]) == count


def test_max_neighbors_is_bounded_and_a_budget_above_the_batch_is_harmless():
    for bad in (0, -1, MAX_NEIGHBORS_LIMIT + 1, 10**12, 2.5, True):
        with pytest.raises(ValueError, match=r"GemNetT.max_neighbors: expected None or an int"):
            GemNetT(**GEMNET, max_neighbors=bad)
    model, g, variables = _gemnet_setup(max_neighbors=MAX_NEIGHBORS_LIMIT)
    assert model.triplet_budget(g) == 8  # ethanol: A - 1 slots at most, no [E, 1024] tables
    np.testing.assert_array_equal(jax.jit(model.apply)(variables, g),
                                  jax.jit(GemNetT(**GEMNET).apply)(variables, g))


def test_scale_fit_on_a_batch_without_edges_names_the_factor():
    model = GemNetT(**{**GEMNET, "cutoff": 0.1})
    g = mg.batch_frames(jnp.asarray(ethanol_frames(2)), ETHANOL_Z, 0.1)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    with pytest.raises(ValueError, match=r"fit_scale_factors: scale factor .* came out .* "
                                         r"cutoff 0.1 Å\); expected a batch whose atoms have "
                                         r"neighbours within the cutoff"):
        fit_scale_factors(model, variables, g)


# ------------------------------------------------------------------- data checks (frames)

def test_check_frames_reports_coincident_atoms_and_edgeless_frames():
    frames = ethanol_frames(4)
    checks.check_frames(frames, ETHANOL_Z, 5.0)  # ordinary data passes
    with pytest.raises(ValueError, match=r"frame 0 has atoms 2 and 8 at 0 Å; expected atoms "
                                         r"at least 0.01 Å apart"):
        checks.check_frames(_coincident(4), ETHANOL_Z, 5.0)
    with pytest.raises(ValueError, match=r"4 of 4 frames \(first: frame 0, closest pair "
                                         r"0.9\d* Å\) have no two atoms within the cutoff "
                                         r"0.1 Å; the model would see no edge"):
        checks.check_frames(frames, ETHANOL_Z, 0.1)
    # padded atoms (Z = 0) are not atoms: a padded slot at the origin twice is fine
    pos = np.concatenate([frames, np.zeros((4, 2, 3))], axis=1)
    z = np.concatenate([ETHANOL_Z, [0, 0]])
    checks.check_frames(pos, z, 5.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cutoff: expected a positive number"):
            checks.check_frames(frames, ETHANOL_Z, bad)
    with pytest.raises(ValueError, match=r"atomic_numbers: expected \[A\]"):
        checks.check_frames(frames, ETHANOL_Z[:3], 5.0)


# --------------------------------------------------------------------- damaged MD17 files

def _md17_file(path, compressed=False):
    rng = np.random.default_rng(0)
    save = np.savez_compressed if compressed else np.savez
    save(path, R=ETHANOL_POS[None] + 0.01 * rng.standard_normal((20, 9, 3)),
         E=rng.standard_normal((20, 1)), F=rng.standard_normal((20, 9, 3)), z=ETHANOL_Z)
    return path


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_truncated_or_altered_md17_file_is_one_clear_error(tmp_path, compressed):
    from geonorm_jax.data.molecules.md17 import load_md17

    good = _md17_file(tmp_path / "good.npz", compressed).read_bytes()
    cases = {f"cut{k}": good[:k] for k in range(0, len(good), max(1, len(good) // 23))}
    for k in range(64, len(good) - 64, max(1, len(good) // 17)):  # bytes overwritten
        b = bytearray(good)
        b[k:k + 16] = bytes(16)
        cases[f"zeroed{k}"] = bytes(b)
    for label, payload in cases.items():
        path = tmp_path / f"{label}.npz"
        path.write_bytes(payload)
        try:
            load_md17(path)
        except ValueError as e:
            assert str(path) in str(e) and "\n" not in str(e), (label, str(e))
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{label}: {type(e).__name__}: {e}")
    assert not isinstance(zipfile.BadZipFile(), ValueError)  # the error the loader converts


# ----------------------------------------------------------------- generation settings

@pytest.mark.parametrize("field,value", [
    ("temperature", 1e308), ("temperature", 1e5), ("temperature", 0.0),
    ("temperature", float("nan")), ("timestep", 50.0), ("friction", 1e300),
    ("friction", -1.0), ("fmax", 1e9),
])
def test_generation_settings_outside_their_domain_are_refused_up_front(tmp_path, field, value,
                                                                       capsys):
    from geonorm_jax.cli import main
    from geonorm_jax.data.molecules.config import MoleculeConfig

    with pytest.raises(ValueError, match=rf"{field} must be a number in"):
        MoleculeConfig(**{field: value})
    if field in ("temperature", "timestep", "friction"):
        out = tmp_path / "d"
        rc = main(["data", "generate", "--dataset", "md17-xtb", "--molecule", "water",
                   "--frames", "2", "--trajectories", "1", f"--{field}", str(value),
                   "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists(), "a refused setting wrote files"


def test_xtb_failure_is_one_clear_error():
    pytest.importorskip("tblite")
    from geonorm_jax.data.molecules.xtb import XTB, XTBError

    xtb = XTB(np.array([8, 1, 1]))
    with pytest.raises(XTBError, match="positions are not finite"):
        xtb(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="GFN2-xTB"):
        xtb(np.zeros((3, 3)))  # three nuclei in one point


# ------------------------------------------------------------ disk full during generation

def test_disk_full_during_data_generate_is_one_line_and_nothing_half_written(
        tmp_path, monkeypatch, capsys):
    from geonorm_jax import _io
    from geonorm_jax.cli import main

    real = _io.os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) >= 2:  # the first file goes through, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(_io.os, "fsync", full)
    out = tmp_path / "d"
    rc = main(["data", "generate", "--particles", "5", "--train", "4", "--valid", "2",
               "--test", "2", "--steps", "400", "--sample-freq", "100", "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and "data generate" in err
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    assert not (out / "metadata.json").exists()
