"""The survey's Case 1 on GemNet-T: with BatchNorm in training mode one molecule's predicted
energy depends on the other molecules of its batch; with a batch-independent layer it does
not (exactly, float64). The experiment script's test preset runs end to end (slow)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _molecules import ETHANOL_Z, ethanol_frames

import geonorm_jax as gj
from experiments import batch_correlation as bc
from geonorm_jax.models import molecular_graph as mg
from geonorm_jax.models.gemnet import GemNetT

CUTOFF = 3.0
TINY = {**bc.TINY, "cutoff": CUTOFF, "max_atomic_number": 9, "scale_factors": False}


def _change_of_a(norm: str | None, delta: float = 0.1) -> tuple[float, float]:
    """``(|dE_A|, |dE_B|)`` when molecule B (frame 1 of 2) moves by ``delta`` Å RMS."""
    model = GemNetT(**TINY, atom_norm=gj.norms.make(norm) if norm else None, training=True)
    pos = ethanol_frames(2)
    z = jnp.broadcast_to(jnp.asarray(ETHANOL_Z), (2, 9))
    g = mg.batch_frames(jnp.asarray(pos), z, CUTOFF)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    mode = "batch_stats" in variables
    direction = np.random.default_rng(1).standard_normal(pos.shape[1:])
    moved = pos.copy()
    moved[1] += delta * direction / np.sqrt(np.mean(direction**2))
    e0 = np.asarray(bc.energies(model, variables, jnp.asarray(pos), z, mode))
    e1 = np.asarray(bc.energies(model, variables, jnp.asarray(moved), z, mode))
    return float(abs(e1[0] - e0[0])), float(abs(e1[1] - e0[1]))


def test_batch_norm_in_training_couples_molecules_layer_norm_does_not():
    bn_a, bn_b = _change_of_a("batch_norm")
    ln_a, ln_b = _change_of_a("layer_norm")
    assert bn_b > 1e-3 and ln_b > 1e-3  # molecule B itself moved
    assert bn_a > 1e-6  # Case 1: A's energy follows B through the batch statistics
    assert ln_a <= 1e-13  # per-atom statistics: A is untouched


@pytest.mark.slow
@pytest.mark.parametrize("name", bc.zoo_layers())
def test_layers_the_audit_marks_batch_independent_leave_other_molecules_alone(name):
    verdict = gj.audit.audit(name, probes=("batch",)).properties["batch"].verdict
    change_a, _ = _change_of_a(name)
    if verdict == "holds":
        assert change_a <= 1e-12, (name, change_a)
    if name == "batch_norm":
        assert verdict == "broken" and change_a > 1e-6


@pytest.mark.slow
def test_script_test_preset_end_to_end(tmp_path):
    out = tmp_path / "results"
    assert bc.main(["--preset", "test", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    doc = json.loads((out / "results.json").read_text())
    res = doc["results"]
    assert set(res["curves"]) == set(bc.CURVES)
    assert res["verdict"] == {"batch_norm_train_couples_molecules": True,
                              "others_exactly_independent": True,
                              "audit_batch_independent_layers_unchanged": True}
    assert len(res["curves"]["none"]["delta_energy_A"]) == len(res["deltas"])
    assert (out / doc["plots"][0]).stat().st_size > 1000
