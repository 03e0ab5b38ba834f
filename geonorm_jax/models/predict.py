r"""What a model predicts from a batch of its task's arrays: the standard ``init`` and
``predict`` of each task, used by every :class:`~geonorm_jax.models.registry.ModelSpec` that
does not bring its own.

Potentials (task ``"molecules"``), batch of ``B`` frames of ``A`` atoms:
``positions [B, A, 3]`` (Å), ``atomic_numbers [B, A]`` int (0 = padding). The block-padded
graph of all intra-frame pairs within the model's cutoff is built from the positions
(:func:`~geonorm_jax.models.molecular_graph.batch_frames`); the prediction is
``{"energy": E [B], "forces": F [B, A, 3]}`` with ``F = -dE/dx``
(:func:`~geonorm_jax.models.molecular_graph.energy_and_forces`).

N-body (task ``"nbody"``), ``B`` systems of ``N`` particles: ``loc``, ``vel [B, N, 3]``,
``charges [B, N, 1]``; the prediction is the positions ``[B, N, 3]`` after the task's horizon.

Collections: everything but ``params`` (running statistics of norms, GemNet-T's fitted
``scale_factors``) travels as ``variables["batch_stats"] = {collection: tree}``; only the
``batch_stats`` collection changes in training. ``predict`` returns ``(prediction,
collections)`` with the collections updated when ``training``.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = [
    "potential_graph",
    "potential_init",
    "potential_predict",
    "nbody_init",
    "nbody_predict",
    "STANDARD",
]


def potential_graph(model, batch: dict, cutoff: float | None = None):
    """The block-padded :class:`~geonorm_jax.models.molecular_graph.MolecularGraph` of a batch
    within ``cutoff`` (default: ``model.cutoff``)."""
    from geonorm_jax.models.molecular_graph import batch_frames

    cutoff = model.cutoff if cutoff is None else cutoff
    return batch_frames(batch["positions"], batch["atomic_numbers"], cutoff)


def _split_collections(variables: dict) -> dict:
    return {"params": variables["params"],
            "batch_stats": {k: v for k, v in variables.items() if k != "params"}}


def potential_init(model, key: jax.Array, batch: dict) -> dict:
    """Flax variables of a potential from an example batch, as ``{"params", "batch_stats":
    {collection: tree}}``."""
    return _split_collections(model.init(key, potential_graph(model, batch)))


def potential_predict(model, variables: dict, batch: dict, training: bool):
    """``({"energy": [B], "forces": [B, A, 3]}, collections)`` of a batch of frames."""
    from geonorm_jax.models.molecular_graph import energy_and_forces

    graph = potential_graph(model, batch)
    shape = batch["positions"].shape
    collections = dict(variables.get("batch_stats", {}))
    full = {"params": variables["params"], **collections}
    if training:
        e, f, updates = energy_and_forces(model, full, graph, mutable=["batch_stats"],
                                          training=True)
        if "batch_stats" in updates:
            collections["batch_stats"] = updates["batch_stats"]
    else:
        e, f = energy_and_forces(model, full, graph)
    return {"energy": e, "forces": f.reshape(shape)}, collections


def nbody_init(model, key: jax.Array, batch: dict) -> dict:
    """Flax variables of the N-body EGNN from an example batch."""
    return model.init(key, batch["loc"], batch["vel"], batch["charges"], training=False)


def nbody_predict(model, variables: dict, batch: dict, training: bool):
    """``(positions [B, N, 3], batch_stats)``. A kNN graph (``graph="knn"``) is built by the
    model from ``batch["loc"]``; it depends only on distances, so it is unchanged by the
    rotations, translations and permutations that the equivariance checks apply (up to
    ties)."""
    args = (batch["loc"], batch["vel"], batch["charges"])
    if training:
        pred, updates = model.apply(variables, *args, training=True, mutable=["batch_stats"])
        return pred, updates.get("batch_stats", variables.get("batch_stats", {}))
    return model.apply(variables, *args, training=False), variables.get("batch_stats", {})


#: ``{task: (init, predict)}``
STANDARD: dict[str, tuple[Any, Any]] = {
    "molecules": (potential_init, potential_predict),
    "nbody": (nbody_init, nbody_predict),
}
