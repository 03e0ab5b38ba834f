"""Catalogue cases shared by the wrapper tests (Equinox, NNX) that compare a wrapper with its
pure ``Norm``.

A case is built by the audit's :func:`geonorm_jax.audit.make_case`: a float32 input of the
entry's kind ``[B, N, C]`` (coordinates ``[B, N, 3]``, vectors ``[B, N, C, 3]``, ...), its
context, trained-like perturbed parameters and state; the mask ``[B, N]`` makes the last
particle of sample 0 padding (none for weight norms). Wrappers must match the pure functions
bit for bit, hence :func:`assert_trees_equal`.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from geonorm_jax.audit import make_case
from geonorm_jax.norms import CATALOG, catalog

B, N, C = 3, 5, 4
NAMES = [e.name for e in CATALOG]
#: running state that the layer never updates (a dataset constant fixed at init)
CONSTANT_STATE = {"avg_num_neighbors"}


def catalog_case(name: str, seed: int = 0):
    """``(info, norm, case, mask)`` for the catalogue entry ``name``."""
    info = catalog.get(name)
    norm = info.make()
    case = make_case(norm, info.kind, jax.random.key(seed), batch=B, nodes=N, channels=C,
                     context=info.context, dtype=jnp.float32)
    mask = None
    if info.kind != "weights":  # the last particle of sample 0 is padding
        mask = jnp.ones((B, N), bool).at[0, -1].set(False)
    return info, norm, case, mask


def as_array(y) -> np.ndarray:
    """``y`` (an array or an ``e3nn.IrrepsArray``) as a NumPy array."""
    return np.asarray(y.array if isinstance(y, e3nn.IrrepsArray) else y)


def assert_trees_equal(a, b) -> None:
    """Same tree structure, and every leaf equal in shape, dtype and value (bit for bit)."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.shape(u) == np.shape(v) and np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
