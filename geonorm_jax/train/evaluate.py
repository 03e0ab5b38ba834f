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
import numpy as np

from geonorm_jax import geometry
from geonorm_jax.train.step import per_sample_mse

__all__ = [
    "split_errors",
    "transform_split",
    "random_transforms",
    "rte_errors",
    "RTE_COLUMNS",
    "summarize_rte",
]

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


def random_transforms(data: dict, key: jax.Array, translation_scale: float):
    """One RTE draw: ``(rotated_split, translated_split)`` with per-sample random transforms.

    Rotations are Haar-random (``e3nn.rand_matrix``); translations are ``N(0, tau^2 I_3)`` with
    ``tau = translation_scale * std(data["loc"])``. Jittable.
    """
    num, dtype = data["loc"].shape[0], data["loc"].dtype
    k_rot, k_trans = jax.random.split(key)
    tau = translation_scale * jnp.std(data["loc"])
    rotation = geometry.random_rotation(k_rot, (num,), dtype=dtype)
    translation = geometry.random_translation(k_trans, (num,), scale=1.0, dtype=dtype) * tau
    return transform_split(data, rotation=rotation), transform_split(data, translation=translation)


def rte_errors(
    errors_fn: Callable,
    data: dict,
    key: jax.Array,
    *,
    draws: int,
    translation_scale: float,
    transforms: Callable = random_transforms,
) -> dict:
    """Errors for RTE: ``plain [..., S]``, ``rotated [..., D, S]``, ``translated [..., D, S]``.

    Args:
      errors_fn: ``errors_fn(split) -> per-sample MSE [..., S]`` (e.g. the seed-vmapped
        evaluation of the trained parameters; the leading axes are kept).
      data: the split (dict of ``[S, ...]`` arrays).
      key: draw ``d`` uses ``jax.random.split(key, draws)[d]``; the same key gives the same
        transforms for every seed (a paired comparison).
      draws: ``D``, transforms per sample.
      translation_scale: translation std in units of ``std(data["loc"])``.
      transforms: ``(data, key, translation_scale) -> (rotated, translated)`` (pass a jitted
        :func:`random_transforms` to avoid op-by-op dispatch).
    """
    rotated, translated = [], []
    for k in jax.random.split(key, draws):
        rot_data, trans_data = transforms(data, k, translation_scale)
        rotated.append(np.asarray(errors_fn(rot_data)))
        translated.append(np.asarray(errors_fn(trans_data)))
    return {
        "plain": np.asarray(errors_fn(data)),
        "rotated": np.stack(rotated, axis=-2),
        "translated": np.stack(translated, axis=-2),
    }


def summarize_rte(errors: dict) -> dict:
    """The 8 columns of the GeoNorm paper's Table 1 (plus ``mse``) from :func:`rte_errors`,
    for one model (``plain [S]``, ``rotated``/``translated [D, S]``), in float64 NumPy."""
    plain = float(np.mean(np.asarray(errors["plain"], np.float64)))
    rot = np.asarray(errors["rotated"], np.float64).reshape(-1)
    trans = np.asarray(errors["translated"], np.float64).reshape(-1)
    return {
        "mse": plain,
        "mean_R_err": float(np.mean(rot)),
        "median_R_err": float(np.median(rot)),
        "max_R_err": float(np.max(rot)),
        "delta_R_err": float(np.mean(rot)) - plain,
        "mean_T_err": float(np.mean(trans)),
        "median_T_err": float(np.median(trans)),
        "max_T_err": float(np.max(trans)),
        "delta_T_err": float(np.mean(trans)) - plain,
    }
