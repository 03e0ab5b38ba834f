"""A potential written outside geonorm-jax, registered once, trained like the built-in models.

``PairPotential`` is a small SchNet-like model (distance-filtered messages between atoms within
a cutoff, a sum of atomic energies). One :func:`geonorm_jax.models.registry.register` call makes
it a model of the ``molecules`` task: the trainer, ``geonorm-jax train --model
pair_potential`` (with ``--import examples/custom_model.py``), ``geonorm-jax models`` and
evaluation then serve it. This script trains it for two epochs on GFN2-xTB water frames with a
catalogue LayerNorm at its ``feature`` place, evaluates the best parameters and prints them::

    python examples/custom_model.py --out runs/pair-potential
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from geonorm_jax.models import registry
from geonorm_jax.models.layers import merge_training
from geonorm_jax.models.molecular_graph import apply_block_norm, edge_vectors, species_scale_shift
from geonorm_jax.models.placement import NormPlace, NormPlacement
from geonorm_jax.models.radial import cosine_cutoff, gaussian_rbf, shifted_softplus


class PairPotential(nn.Module):
    """``E = sum_i e(h_i)``, ``h_i += Dense(sum_j W(rbf(r_ij)) h_j)`` for ``num_layers`` rounds."""

    hidden: int = 32
    num_layers: int = 2
    cutoff: float = 4.0
    max_atomic_number: int = 118
    species_shift: tuple[float, ...] | None = None  # the task's fitted target normalization
    species_scale: float | None = None
    feature_norm: object | None = None
    training: bool | None = None
    placement: ClassVar = NormPlacement("PairPotential", (NormPlace(
        "feature", ("features",), "atom features h [G, A, H] after each round"),),
        defaults=(("features", "feature"),))

    @nn.compact
    def __call__(self, graph, training: bool | None = None):  # MolecularGraph -> E [G]
        training = merge_training(self.training, training)
        vec = edge_vectors(graph.positions, graph.senders, graph.receivers)  # [E, 3]
        d2 = jnp.sum(vec**2, axis=-1)
        emask = graph.edge_mask & (d2 < self.cutoff**2) & (graph.senders != graph.receivers)
        r = jnp.sqrt(jnp.where(emask, d2, 1.0))
        fcut = cosine_cutoff(r, self.cutoff) * emask  # [E]
        rbf = gaussian_rbf(r, 0.0, self.cutoff, 16) * fcut[:, None]  # [E, 16]
        h = nn.Embed(self.max_atomic_number + 1, self.hidden)(graph.species)  # [N, H]
        for t in range(self.num_layers):
            msg = nn.Dense(self.hidden)(rbf) * h[graph.senders]  # [E, H]
            agg = jax.ops.segment_sum(msg, graph.receivers, num_segments=graph.num_atoms)
            h = h + nn.Dense(self.hidden)(shifted_softplus(agg))
            if self.feature_norm is not None:
                h = apply_block_norm(self.feature_norm, h, graph.atom_mask, graph.atoms_per_graph,
                                     name=f"feature_norm_{t}", training=training)
        e = nn.Dense(1)(shifted_softplus(nn.Dense(self.hidden)(h)))[:, 0]  # [N]
        e = species_scale_shift(e, graph.species, self.species_scale, self.species_shift)
        e = jnp.where(graph.atom_mask, e, 0.0)
        return jax.ops.segment_sum(e, graph.graph_ids, num_segments=graph.num_graphs)


registry.register(registry.ModelSpec(
    name="pair_potential", task="molecules", module=PairPotential,
    defaults=dict(hidden=32, num_layers=2, cutoff=4.0),
    description="example: a SchNet-like pair potential defined outside the package",
    citation="examples/custom_model.py"), replace=True)


def main(argv: list[str] | None = None) -> dict:
    """Train ``pair_potential`` for ``--epochs`` on water, evaluate it, print the result."""
    from geonorm_jax import train
    from geonorm_jax.data.molecules import MoleculeConfig, get_molecular_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="run directory (default: temporary)")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="pair-potential-"))
    # 24 GFN2-xTB Langevin frames of water (cached; a few seconds on first use)
    data_dir = get_molecular_dataset(MoleculeConfig(
        molecule="water", frames=24, trajectories=2, stride=4, equilibration=6),
        out / "data-cache")
    config = train.merge(train.RunConfig(), {
        "task": "molecules",
        "molecules": {"molecule": "water", "train": 12, "valid": 4, "test": 8},
        "model": {"name": "pair_potential", "norm": "layer_norm"},  # default place: feature
        "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
        "train": {"epochs": args.epochs, "batch_size": 4, "seeds": [0], "eval_every": 1,
                  "checkpoint_every": 1, "eval_batch_size": 8, "explosion_threshold": 1e30,
                  "fast_compile": True},
    })
    train.train(config, out / "run", data_dir=data_dir, progress=False)
    result = train.evaluate_run(out / "run", data_dir=data_dir)
    print(f"pair_potential + layer_norm on water, {args.epochs} epochs: "
          f"test energy MAE {result['test_energy_mae'][0]:.1f} meV, "
          f"test force MAE {result['test_force_mae'][0]:.1f} meV/Å  (run: {out / 'run'})")
    return result


if __name__ == "__main__":
    main()
