"""Reference molecule geometries for the molecular model tests (Allegro, SchNet).

Ethanol (C2H5OH): RDKit ETKDG embedding (seed 7) relaxed with the MMFF94 force field;
coordinates in Å, rounded to 1e-4 Å. Bond lengths: C-C 1.51, C-O 1.42, C-H 1.09-1.10,
O-H 0.97 Å.
"""

import numpy as np

_ETHANOL = (
    (6, (-0.8544, 0.2235, 0.2418)),
    (6, (0.3871, -0.3585, -0.4015)),
    (8, (1.5316, 0.3843, -0.0073)),
    (1, (-1.7476, -0.3278, -0.0651)),
    (1, (-0.9749, 1.2758, -0.0359)),
    (1, (-0.7771, 0.1892, 1.3335)),
    (1, (0.5283, -1.4032, -0.1080)),
    (1, (0.3103, -0.3138, -1.4917)),
    (1, (1.5966, 0.3305, 0.9614)),
)

ETHANOL_Z = np.array([z for z, _ in _ETHANOL], np.int32)  # [9]
ETHANOL_POS = np.array([p for _, p in _ETHANOL], np.float64)  # [9, 3] (Å)


def ethanol_frames(num_frames: int = 2, amplitude: float = 0.05, seed: int = 0) -> np.ndarray:
    """``[B, 9, 3]``: ethanol, frame 0 exact, the others displaced by ``amplitude`` Å noise
    (like MD snapshots)."""
    rng = np.random.default_rng(seed)
    noise = amplitude * rng.standard_normal((num_frames, 9, 3))
    noise[0] = 0.0
    return ETHANOL_POS[None] + noise


FULL_GROUP = ("SO3", "O3", "translation", "permutation", "batch")


def assert_energy_model_symmetric(fn, variables, pos, z, group=FULL_GROUP) -> None:
    """Energies ``[B]`` invariant and forces ``[B, A, 3]`` equivariant under ``group`` at
    1e-9 (float64): ``fn(variables, positions [B, A, 3], species [B, A]) -> (E, F)``."""
    import jax

    import geonorm_jax as gj

    gj.assert_equivariant(
        lambda p, s: fn(variables, p, s), jax.random.key(1), pos, z,
        group=group, kinds=("coordinates", "features"),
        out_kinds=("global", "vectors"), atol=1e-9, rtol=1e-9,
    )


def ethanol_inputs(num_frames: int = 2):
    """``(positions [B, 9, 3], species [B, 9])`` as jax arrays: :func:`ethanol_frames` and
    ethanol's atomic numbers."""
    import jax.numpy as jnp

    pos = jnp.asarray(ethanol_frames(num_frames))
    return pos, jnp.broadcast_to(jnp.asarray(ETHANOL_Z), (num_frames, 9))


def assert_forces_by_central_differences(fn, variables, pos, z, points, h: float = 1e-5,
                                         rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """``F[b, a, d] = -(E_b(x + h e) - E_b(x - h e)) / 2h`` at each ``(b, a, d)`` of
    ``points`` (float64): ``fn(variables, positions, species) -> (E [B], F [B, A, 3])``."""
    import jax.numpy as jnp

    _, f = fn(variables, pos, z)
    for b, a, d in points:
        step = jnp.zeros_like(pos).at[b, a, d].set(h)
        fd = -(fn(variables, pos + step, z)[0][b] - fn(variables, pos - step, z)[0][b]) / (2 * h)
        np.testing.assert_allclose(fd, f[b, a, d], rtol=rtol, atol=atol,
                                   err_msg=f"force [{b}, {a}, {d}]")


def float32_batch_norm_step(model, num_frames: int = 2):
    """``(graph, variables, energies, forces, updates)`` of one jitted float32 training step of
    ``model`` (built with a BatchNorm and ``training=True``) on ethanol frames; asserts float32,
    finite outputs and that the running statistics moved."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.models import molecular_graph as mg

    pos32 = jnp.asarray(ethanol_frames(num_frames), jnp.float32)
    g = mg.batch_frames(pos32, ETHANOL_Z, model.cutoff)
    variables = jax.jit(model.init)(jax.random.key(0), g)
    assert "batch_stats" in variables
    step = jax.jit(lambda v, g: mg.energy_and_forces(model, v, g, mutable=["batch_stats"]))
    e, f, updates = step(variables, g)
    assert e.dtype == jnp.float32 and f.dtype == jnp.float32 and f.shape == (9 * num_frames, 3)
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(f))
    old, new = (jax.tree.leaves(v) for v in (variables["batch_stats"], updates["batch_stats"]))
    assert any(not np.allclose(a, b) for a, b in zip(old, new, strict=True))
    return g, variables, e, f, updates
