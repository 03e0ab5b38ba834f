"""Tests for geonorm_jax.norms.base (NormInfo, shared helpers) and the package's module layout."""

import ast
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from geonorm_jax import norms
from geonorm_jax.norms import (
    base,
    catalog,
    graph,
    graph_scaling,
    graph_stats,
    vision,
    vision_batch,
    vision_sample,
)

PKG = pathlib.Path(norms.__file__).parent
FAMILIES = ("vision", "vision_batch", "vision_sample", "weights", "graph", "graph_stats",
            "graph_scaling", "vector", "coords")


def test_norm_info_is_one_class_under_every_path():
    assert norms.NormInfo is base.NormInfo is catalog.NormInfo
    assert all(isinstance(e, base.NormInfo) for e in catalog.CATALOG)


@pytest.mark.parametrize("module", FAMILIES)
def test_family_modules_do_not_import_the_catalog(module):
    tree = ast.parse((PKG / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert "geonorm_jax.norms.catalog" not in imported


@pytest.mark.slow  # a fresh interpreter imports jax (seconds); the AST test above is the fast check
@pytest.mark.parametrize("module", ["catalog", "vision", "graph"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    code = f"import geonorm_jax.norms.{module} as m; print(len(m.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("facade,parts", [
    (vision, (vision_batch, vision_sample)),
    (graph, (graph_stats, graph_scaling)),
])
def test_split_families_reexport_every_name_and_keep_the_catalogue_order(facade, parts):
    names = [e.name for e in facade.CATALOG_ENTRIES]
    assert sorted(names) == sorted(e.name for p in parts for e in p.CATALOG_ENTRIES)
    assert names == [e.name for e in catalog.CATALOG if e.name in set(names)]
    for part in parts:
        for name in part.__all__:
            if name != "CATALOG_ENTRIES":
                assert getattr(facade, name) is getattr(part, name) is getattr(norms, name)
                assert name in facade.__all__


def test_check_param_sizes_names_both_sizes_and_the_layout():
    x = jnp.zeros((2, 3, 4))
    base.check_param_sizes({"scale": jnp.ones(4), "eps": jnp.ones(())}, x, "n", ("scale",))
    with pytest.raises(ValueError, match=r"n: 'bias' has 5 channels but the features have 4; "
                                         r"expected features \[batch, nodes, 5\], received "
                                         r"shape \(2, 3, 4\)"):
        base.check_param_sizes({"bias": jnp.ones(5)}, x, "n", ("scale", "bias"))
    with pytest.raises(ValueError, match=r"'u' has 2 output units but the kernel has 4"):
        base.check_param_sizes({"u": jnp.ones(2)}, jnp.zeros((3, 4)), "sn", ("u",),
                               unit="output units", holder="the kernel has",
                               layout="a kernel [fan_in, {n}]")


def test_masked_sum_count_and_affine_helpers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4))
    mask = np.array([[True, False, True], [True, True, True]])
    got = base.masked_sum(jnp.asarray(x), jnp.asarray(mask), (1, 2))
    np.testing.assert_allclose(got[:, 0, 0], (x * mask[..., None]).sum(axis=(1, 2)))
    np.testing.assert_allclose(base.masked_sum(jnp.asarray(x), None, (1,)),
                               x.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(base.masked_count(jnp.asarray(x), jnp.asarray(mask), (1,)),
                                  mask.sum(axis=1)[:, None, None] * np.ones((1, 1, 4)))
    p = base.affine_params(4, True, False, jnp.float32)
    assert set(p) == {"scale"} and p["scale"].dtype == jnp.float32
    np.testing.assert_allclose(base.affine(jnp.asarray(x), {"scale": 2.0, "bias": 1.0}),
                               2.0 * x + 1.0)
    assert base.stat_dtype(jnp.bfloat16) == jnp.float32
    assert base.stat_dtype(jnp.float64) == jnp.float64
    base.check_choice("paper", ("paper", "survey"), "reading")
    with pytest.raises(ValueError, match=r"reading: expected one of \('paper', 'survey'\); "
                                         r"received 'other'"):
        base.check_choice("other", ("paper", "survey"), "reading")
    with pytest.raises(ValueError, match=r"features: expected scalar features"):
        base.check_node_features(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"mask: expected a node mask"):
        base.check_node_features(jnp.zeros((2, 3, 4)), jnp.ones((3, 2), bool))
