"""The geometric-match audit: probes reproduce the papers' statements and catch broken layers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import geometry
from geonorm_jax.audit import (
    PROBES,
    TASK_SYMMETRIES,
    TaskSymmetry,
    audit,
    audit_table,
    get_symmetry,
    judge,
    make_case,
    perturb_like_trained,
    radial_factors,
    to_json,
    to_markdown,
    to_text,
)
from geonorm_jax.norms import Norm, make

KEY = jax.random.PRNGKey(7)


def verdicts(result, names):
    return {n: result.properties[n].verdict for n in names}


# ----------------------------------------------------------------- the GeoNorm paper's lemmas

def test_lemma1_layer_norm_coords_breaks_rotation_and_translation():
    r = audit("layer_norm_coords", key=KEY, probes=("SO3", "translation"))
    assert verdicts(r, ("SO3", "translation")) == {"SO3": "broken", "translation": "broken"}
    assert r.properties["SO3"].value > 0.1


def test_lemma2_scale_norm_breaks_translation_only():
    # shared g: then permutation holds too and translation is the only broken symmetry
    norm = make("scale_norm_l2", per_particle=False)
    r = audit(norm, key=KEY, probes=("SO3", "O3", "translation", "permutation", "batch"))
    broken = {n for n, p in r.properties.items() if p.verdict != "holds"}
    assert broken == {"translation"}
    # the catalogue entry (per-particle g_i, Eq. 4) also breaks permutation
    r = audit("scale_norm_l2", key=KEY, probes=("SO3", "translation", "permutation"))
    assert verdicts(r, ("SO3", "translation", "permutation")) == {
        "SO3": "holds", "translation": "broken", "permutation": "broken"}


@pytest.mark.parametrize("name", ["geo_norm", "geo_norm_system", "geo_norm_shared"])
def test_theorem1_geo_norm_is_se3_equivariant(name):
    r = audit(name, key=KEY, probes=("SO3", "O3", "translation"))
    for g in ("SO3", "O3", "translation"):
        assert r.properties[g].verdict == "holds", (g, r.properties[g])
        assert r.properties[g].value < 1e-10


def test_per_particle_geo_norm_breaks_permutation_and_shared_keeps_it():
    assert audit("geo_norm", key=KEY, probes=("permutation",)).properties[
        "permutation"].verdict == "broken"
    assert audit("geo_norm_shared", key=KEY, probes=("permutation",)).properties[
        "permutation"].verdict == "holds"


def test_geo_norm_sigma_per_particle_discards_radial_information():
    r = audit("geo_norm", key=KEY, probes=("radial", "scale"))
    assert r.properties["radial"].verdict == "invariant"
    assert r.properties["scale"].verdict == "invariant"
    # the system-sigma reading keeps radial information (but still discards global scale)
    r = audit("geo_norm_system", key=KEY, probes=("radial", "scale"))
    assert r.properties["radial"].verdict == "sensitive"
    assert r.properties["scale"].verdict == "invariant"


# ----------------------------------------------------------------- the survey's cases

def test_batch_norm_is_batch_dependent_layer_norm_is_not():
    bn = audit("batch_norm", key=KEY, probes=("batch",)).properties["batch"]
    assert bn.verdict == "broken"
    assert bn.extra["eval"] < 1e-12  # eval mode uses running statistics
    ln = audit("layer_norm", key=KEY, probes=("batch",)).properties["batch"]
    assert ln.verdict == "holds"


def test_instance_norm_is_contrast_invariant():
    r = audit("instance_norm", key=KEY, probes=("scale", "shift", "node_scale"))
    assert r.properties["scale"].verdict == "invariant"
    assert r.properties["shift"].verdict == "invariant"
    assert r.properties["node_scale"].verdict == "sensitive"
    assert audit("instance_norm", "image-style-transfer", key=KEY).matched


# ----------------------------------------------------------------- deliberately broken layers

def _stateless(fn, kind):
    return Norm(lambda key, x, **c: ({}, {}),
                lambda p, s, x, *, mask=None, training=False, **c: (fn(x), s),
                kind=kind, name="custom")


def test_identity_preserves_everything_and_introduces_nothing():
    r = audit(_stateless(lambda x: x, None), "nbody-dynamics", key=KEY, kind="coordinates")
    assert r.matched, r.violations
    for n in ("SO3", "O3", "translation", "permutation", "batch", "padding", "replication"):
        assert r.properties[n].verdict == "holds"
    for n in ("scale", "shift", "node_scale", "radial"):
        assert r.properties[n].verdict == "sensitive"


def test_audit_catches_a_fixed_vector_offset():
    offset = jnp.array([0.3, -0.2, 0.5])
    r = audit(_stateless(lambda x: x + offset, "coordinates"), "nbody-dynamics", key=KEY)
    assert r.properties["SO3"].verdict == "broken"
    assert r.properties["translation"].verdict == "holds"
    assert not r.matched and "SO3" in r.violated


def test_audit_catches_batch_mixing_and_node_order_dependence():
    mixing = _stateless(lambda x: x - jnp.mean(x, axis=(0, 1), keepdims=True), "features")
    assert audit(mixing, key=KEY, probes=("batch",)).properties["batch"].verdict == "broken"
    ramp = _stateless(lambda x: x * jnp.arange(1, x.shape[1] + 1)[None, :, None], "features")
    r = audit(ramp, key=KEY, probes=("permutation", "padding"))
    assert r.properties["permutation"].verdict == "broken"
    padded_count = _stateless(lambda x: x / x.shape[1], "features")  # ignores the mask
    r = audit(padded_count, key=KEY, probes=("padding",))
    assert r.properties["padding"].verdict == "broken"


def test_audit_catches_a_radial_projection():
    def unit_sphere(x):  # every particle onto the unit sphere about the centroid
        mu = geometry.centroid(x)[:, None, :]
        return mu + geometry.safe_normalize(x - mu)

    r = audit(_stateless(unit_sphere, "coordinates"), "nbody-dynamics", key=KEY)
    assert r.properties["radial"].verdict == "invariant"
    assert r.properties["SO3"].verdict == "holds"
    assert set(r.violated) == {"scale", "radial"}


def test_a_raising_layer_is_reported_not_crashed():
    def bad(x):
        raise ValueError(f"boom {x.shape}")

    r = audit(_stateless(bad, "features"), key=KEY, probes=("batch",))
    assert r.properties["batch"].verdict == "error"
    assert "boom" in r.properties["batch"].detail


# ----------------------------------------------------------------- tasks: nbody-dynamics

# name -> (violated conditions the paper's statements imply, reason)
NBODY_EXPECTED = {
    "layer_norm_coords": ({"SO3", "O3", "translation", "permutation", "node_scale"},
                          "Lemma 1: neither rotation nor translation equivariant; per-particle "
                          "g_i, b_i tie it to the particle order; per-particle statistics over "
                          "d discard |x_i|"),
    "scale_norm_l2": ({"translation", "permutation", "node_scale"},
                      "Lemma 2: rotation- but not translation-equivariant; x_i/||x_i|| discards "
                      "each particle's distance from the origin; g_i per particle"),
    "geo_norm": ({"permutation", "scale", "radial"},
                 "Theorem 1 gives SE(3); Sec. 6 admits it is not permutation equivariant; "
                 "sigma_i = ||x_i - mu|| maps every particle to distance |g_i| (radial and "
                 "global scale lost)"),
    "geo_norm_system": ({"permutation", "scale"},
                        "SE(3) as Theorem 1; g_i per particle; one sigma per system keeps "
                        "radial ratios but not the overall scale"),
    "geo_norm_shared": ({"scale"},
                        "SE(3) and permutation equivariant; the normalisation discards the "
                        "overall scale of the configuration"),
    "batch_norm": ({"batch"}, "survey Case 1: statistics over the batch"),
    "mace_avg_neighbor_norm": (set(), "a fixed dataset constant: changes nothing geometric"),
}


@pytest.mark.parametrize("name", sorted(NBODY_EXPECTED))
def test_nbody_verdicts_match_the_papers(name):
    expected, reason = NBODY_EXPECTED[name]
    r = audit(name, "nbody-dynamics", key=KEY)
    assert set(r.violated) == expected, (reason, r.violations)
    assert r.matched == (not expected)


def test_weight_norms_are_not_judged_but_measured():
    r = audit("weight_norm", "nbody-dynamics", key=KEY)
    assert r.matched is None
    assert r.properties["scale"].verdict == "invariant"  # g W / ||W||
    assert r.properties["SO3"].verdict == "n/a"


def test_judge_reuses_measurements_for_another_task():
    r = audit("geo_norm_shared", "nbody-dynamics", key=KEY)
    j = judge(r, "point-cloud-classification")
    assert j.matched and j.properties is r.properties


def test_task_validation_and_presets():
    assert set(TASK_SYMMETRIES) == {"nbody-dynamics", "molecular-energy", "md-energy-forces",
                          "point-cloud-classification", "image-style-transfer", "set-prediction"}
    with pytest.raises(ValueError, match="received 'rotation'"):
        TaskSymmetry("bad", equivariant_to=("rotation",))
    with pytest.raises(ValueError, match="depends_on"):
        TaskSymmetry("bad", depends_on=("colour",))
    with pytest.raises(ValueError, match="nbody"):
        get_symmetry("n-body")
    assert TASK_SYMMETRIES["molecular-energy"].size_extensive


def test_graph_size_norm_breaks_size_consistency():
    r = audit("graph_size_norm", "molecular-energy", key=KEY)
    assert r.properties["padding"].verdict == "holds"  # counts real nodes only
    assert "replication" in r.violated


# ----------------------------------------------------------------- helpers and outputs

def test_radial_factors_keep_the_centroid():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 3)) + 2
    c = radial_factors(rng, x)
    mu = x.mean(axis=1, keepdims=True)
    moved = mu + c[..., None] * (x - mu)
    np.testing.assert_allclose(moved.mean(axis=1), mu[:, 0], atol=1e-12)
    assert np.all(c >= 0.5 - 1e-12) and np.all(c <= 1.5 + 1e-12) and np.ptp(c) > 0.1


def test_perturbation_keeps_positive_leaves_positive():
    tree = {"scale": jnp.ones(5), "bias": jnp.zeros(5), "count": jnp.arange(3)}
    out = perturb_like_trained(KEY, tree)
    assert bool(jnp.all(out["scale"] > 0)) and not bool(jnp.all(out["scale"] == 1))
    assert not bool(jnp.all(out["bias"] == 0))
    np.testing.assert_array_equal(out["count"], tree["count"])


def test_make_case_builds_context_for_coordinates():
    with jax.enable_x64(True):
        case = make_case(make("geo_norm"), "coordinates", KEY, context=("mu0",))
    assert case.context["mu0"].shape == (3, 3)
    assert case.x.dtype == jnp.float64


def test_reports_render_every_probe():
    rows = audit_table(["batch_norm", "geo_norm"], task="nbody-dynamics", key=KEY)
    md = to_markdown(rows, task="nbody-dynamics", formula=True)
    assert md.count("\n") == 3 and "eval ✓" in md and "✗ err" in md
    assert "mismatch" in to_text(rows, task="nbody-dynamics")
    payload = json.loads(to_json(rows))
    assert set(payload["layers"][0]["properties"]) == set(PROBES)


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    import argparse

    from geonorm_jax.audit import cli as audit_cli

    parser = argparse.ArgumentParser()
    audit_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["audit", "--only", "layer_norm", "instance_norm", "--task",
                              "image-style-transfer", "--out-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "MATCH" in out and "2 layers audited" in out
    data = json.loads((tmp_path / "audit.json").read_text())
    assert [layer["name"] for layer in data["layers"]] == ["layer_norm", "instance_norm"]
    assert "match: image-style-transfer" in (tmp_path / "audit.md").read_text()


def test_survey_audit_experiment_smoke(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments/survey_audit/run.py"
    spec = importlib.util.spec_from_file_location("survey_audit_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--only", "batch_norm", "geo_norm", "--out-dir", str(tmp_path)]) == 0
    md = (tmp_path / "table.md").read_text()
    assert "(A - mu_{b,x}) / sigma_{b,x}" in md and "nbody-dynamics" in md
    data = json.loads((tmp_path / "table.json").read_text())
    assert data["layers"][1]["verdicts"]["nbody-dynamics"]["matched"] is False


def test_readme_audit_call_runs_after_import_geonorm_jax_as_gj():
    """The README's one-line audit, exactly as written, in a fresh interpreter where only
    ``import geonorm_jax as gj`` ran (the audit subpackage is imported on first use)."""
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    calls = re.findall(r"`(gj\.audit\.audit\([^`]*\))`", readme)
    assert calls, "README.md no longer shows a gj.audit.audit(...) call"
    norm = re.search(r"^norm = (gj\.norms\.[^#\n]*?)\s*(#.*)?$", readme, re.M)
    assert norm, "README.md no longer builds `norm = gj.norms...` in its first example"
    script = "\n".join([
        "import sys",
        "import geonorm_jax as gj",
        "assert 'geonorm_jax.audit' not in sys.modules",
        f"my_norm = {norm.group(1)}",
        *(f"result = {call}" for call in calls),
        "print(type(result).__name__, result.matched)",
    ])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "AuditResult"


def test_unknown_package_attribute_is_an_attribute_error():
    import geonorm_jax as gj

    with pytest.raises(AttributeError, match="no_such_module"):
        gj.no_such_module  # noqa: B018
    assert "audit" in dir(gj) and "train" in dir(gj)
