r"""Evaluation: MSE on a split, and rotation/translation errors (RTE, GeoNorm paper Table 1).

RTE protocol (the paper leaves the distributions open; these are our choices):

* For each test sample ``s`` and each draw ``d = 1..D`` (``train.rte_draws``, default 3) we
  draw a Haar-random rotation ``R_{sd}`` (``e3nn.rand_matrix`` via
  :func:`geonorm_jax.geometry.random_rotation`) and, independently, a translation
  ``t_{sd} ~ N(0, tau^2 I_3)`` with ``tau = train.rte_translation_scale * std(x)``, where
  ``std(x)`` is the standard deviation of all input position components of the split
  (default scale 1, so a translation is as large as the system's spread).
* Rotation: positions and velocities are rotated, ``x -> x R^T``, ``v -> v R^T``, and so is the
  target. Translation: positions and target are shifted by ``t``; velocities are unchanged.
* ``R_err = MSE(f(x R^T, v R^T), y R^T)`` and ``T_err = MSE(f(x + t, v), y + t)`` per (sample,
  draw); we report their mean, median and max over all ``S x D`` pairs, and
  ``Delta R_err = mean R_err - MSE``, ``Delta T_err = mean T_err - MSE`` where ``MSE`` is the
  untransformed test MSE of the same parameters. An exactly SE(3)-equivariant model has
  ``Delta R_err = Delta T_err = 0`` up to floating-point rounding.

All functions take the model as ``apply(params, batch_stats, batch, training)`` and run in
evaluation mode (running statistics, no update).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from geonorm_jax import geometry
from geonorm_jax.train.step import per_sample_mse

__all__ = ["split_errors", "transform_split", "rte_errors", "RTE_COLUMNS", "summarize_rte"]

RTE_COLUMNS = (
    "mean_R_err",
    "median_R_err",
    "max_R_err",
    "delta_R_err",
    "mean_T_err",
    "median_T_err",
    "max_T_err",
    "delta_T_err",
)


def split_errors(
    apply: Callable,
    params,
    batch_stats,
    data: dict,
    *,
    chunk: int,
    constrain: Callable = lambda b: b,
) -> jax.Array:
    """Per-sample MSE ``[S]`` of ``data`` (dict of ``[S, ...]`` arrays) in eval mode.

    The split is processed in chunks of ``chunk`` samples with ``lax.map``; the last chunk is
    padded by repeating samples, and the padding is cut off, so results do not depend on
    ``chunk``.
    """
    num = data["loc"].shape[0]
    chunk = max(1, min(chunk, num))
    num_chunks = -(-num // chunk)
    index = (jnp.arange(num_chunks * chunk) % num).reshape(num_chunks, chunk)

    def one(idx):
        batch = constrain({k: jnp.take(v, idx, axis=0) for k, v in data.items()})
        pred, _ = apply(params, batch_stats, batch, False)
        return per_sample_mse(pred, batch["target"], batch.get("mask"))

    return jax.lax.map(one, index).reshape(-1)[:num]


def transform_split(data: dict, rotation=None, translation=None) -> dict:
    """Apply per-sample ``rotation [S, 3, 3]`` and/or ``translation [S, 3]`` to a split.

    Positions and target: ``x R^T + t``; velocities: ``v R^T``; charges and mask unchanged.
    """
    out = dict(data)
    if rotation is not None:
        rot = lambda a: jnp.einsum("snj,sij->sni", a, rotation.astype(a.dtype))
        out["loc"], out["vel"], out["target"] = rot(data["loc"]), rot(data["vel"]), rot(
            data["target"]
        )
    if translation is not None:
        shift = translation.astype(out["loc"].dtype)[:, None, :]
        out["loc"], out["target"] = out["loc"] + shift, out["target"] + shift
    return out


def rte_errors(
    apply: Callable,
    params,
    batch_stats,
    data: dict,
    key: jax.Array,
    *,
    draws: int,
    translation_scale: float,
    chunk: int,
    constrain: Callable = lambda b: b,
) -> dict:
    """Per-(draw, sample) errors for RTE: ``plain [S]``, ``rotated [D, S]``, ``translated [D, S]``.

    See the module docstring for the distributions. The same ``key`` gives the same transforms
    for every seed's parameters (a paired comparison).
    """
    num = data["loc"].shape[0]
    tau = translation_scale * jnp.std(data["loc"])
    run = lambda d: split_errors(apply, params, batch_stats, d, chunk=chunk, constrain=constrain)

    def one_draw(_, k):
        k_rot, k_trans = jax.random.split(k)
        rotation = geometry.random_rotation(k_rot, (num,), dtype=data["loc"].dtype)
        translation = geometry.random_translation(k_trans, (num,), scale=1.0,
                                                  dtype=data["loc"].dtype) * tau
        rotated = run(transform_split(data, rotation=rotation))
        translated = run(transform_split(data, translation=translation))
        return None, (rotated, translated)

    _, (rotated, translated) = jax.lax.scan(one_draw, None, jax.random.split(key, draws))
    return {"plain": run(data), "rotated": rotated, "translated": translated}


def summarize_rte(errors: dict) -> dict:
    """The 8 columns of the GeoNorm paper's Table 1 (plus ``mse``) from :func:`rte_errors`."""
    plain = jnp.mean(errors["plain"])
    rot, trans = errors["rotated"].reshape(-1), errors["translated"].reshape(-1)
    return {
        "mse": plain,
        "mean_R_err": jnp.mean(rot),
        "median_R_err": jnp.median(rot),
        "max_R_err": jnp.max(rot),
        "delta_R_err": jnp.mean(rot) - plain,
        "mean_T_err": jnp.mean(trans),
        "median_T_err": jnp.median(trans),
        "max_T_err": jnp.max(trans),
        "delta_T_err": jnp.mean(trans) - plain,
    }
