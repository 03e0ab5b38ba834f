"""bfloat16 products in the molecular models: accuracy against float32 and step time, per model.

For each registered potential (Allegro, SchNet, GemNet-T) at its published size (or ``tiny``),
on ``--batch`` frames of uracil (GFN2-xTB geometry plus 0.05 Å Gaussian displacements,
:func:`geonorm_jax.bench.molecules.molecule_frames`) with freshly initialised parameters
(seed 0; GemNet-T's scale factors fitted in float32), the same parameters are evaluated twice:
in float32, and with ``matmul_dtype="bfloat16"`` (the dense layers' operands in bfloat16,
accumulated in float32; sums over neighbours and triplets, norms, energies, forces and the loss
in float32: :mod:`geonorm_jax.models.layers`). Reported, bfloat16 against float32:

* ``energy_err_of_spread``: ``max_b |E16_b - E32_b| / std_b(E32)``, the energy error against
  the frame-to-frame spread of the energies (what a potential has to resolve);
* ``energy_rel``: ``max_b |E16_b - E32_b| / mean_b |E32_b|``;
* ``force_rel_rms``: ``rms(F16 - F32) / rms(F32)`` over all atoms and components;
* ``grad_rel_l2`` and ``grad_cosine``: the parameter gradient of the training loss
  (:func:`geonorm_jax.bench.molecules.build_train_step`'s energy-and-force loss on the frames'
  seeded targets) as ``||g16 - g32|| / ||g32||`` and its cosine with ``g32``;

and, unless ``--no-timing``, the jitted train step of both precisions
(:func:`geonorm_jax.bench.molecules.run_molecules`, each case in a fresh process). Writes
``experiments/results/precision_molecules/results.json``::

    python -m experiments.precision_molecules                         # published sizes
    python -m experiments.precision_molecules --size tiny --no-relax --no-timing   # seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import common

NAME = "precision_molecules"
MODELS = ("allegro", "schnet", "gemnet")


def evaluate(model: str, size: str, frames, seed: int = 0) -> dict:
    """float32 and bfloat16 energies, forces and loss gradients of ``model`` at ``size`` on
    ``frames`` (:class:`~geonorm_jax.bench.molecules.Frames`) from the same parameters;
    returns the error figures of the module docstring."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from geonorm_jax.bench.molecules import FORCE_WEIGHT, build_model, model_kwargs
    from geonorm_jax.models import registry
    from geonorm_jax.models.molecular_graph import batch_frames, energy_and_forces

    spec = registry.get(model)
    m32 = build_model(model, size, frames.avg_num_neighbors)
    m16 = build_model(model, size, frames.avg_num_neighbors, "bfloat16")
    pos = jnp.asarray(frames.positions, jnp.float32)
    z = jnp.asarray(frames.atomic_numbers)
    graph = batch_frames(pos, z, spec.cutoff_of(model_kwargs(model, size)))
    batch = {"positions": pos, "atomic_numbers": jnp.broadcast_to(z, pos.shape[:2])}
    variables = spec.init(m32, jax.random.key(seed), batch)
    constants = variables["batch_stats"]
    e_ref = jnp.asarray(frames.energies, jnp.float32)
    f_ref = jnp.asarray(frames.forces.reshape(-1, 3), jnp.float32)

    def outputs(module):
        def loss(params):
            e, f = energy_and_forces(module, {"params": params, **constants}, graph)
            value = ((1.0 - FORCE_WEIGHT) * jnp.mean(jnp.square(e - e_ref))
                     + FORCE_WEIGHT * jnp.mean(jnp.square(f - f_ref)))
            return value, (e, f)

        (_, (e, f)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
        return np.asarray(e, np.float64), np.asarray(f, np.float64), flat.astype(np.float64)

    e32, f32, g32 = outputs(m32)
    e16, f16, g16 = outputs(m16)
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    return {
        "model": model, "size": size, "frames": int(len(e32)),
        "energy_err_of_spread": float(np.abs(e16 - e32).max() / max(np.std(e32), 1e-30)),
        "energy_err_max": float(np.abs(e16 - e32).max()),
        "energy_rel": float(np.abs(e16 - e32).max() / max(np.abs(e32).mean(), 1e-30)),
        "energy_spread": float(np.std(e32)),
        "force_rel_rms": rms(f16 - f32) / max(rms(f32), 1e-30),
        "force_rms": rms(f32),
        "grad_rel_l2": float(np.linalg.norm(g16 - g32) / max(np.linalg.norm(g32), 1e-30)),
        "grad_cosine": float(g16 @ g32 / max(np.linalg.norm(g16) * np.linalg.norm(g32), 1e-30)),
        "finite": bool(np.isfinite(e16).all() and np.isfinite(f16).all()
                       and np.isfinite(g16).all()),
    }


def main(argv: list[str] | None = None) -> dict:
    from geonorm_jax.bench.molecules import MoleculeCase, molecule_frames, run_molecules

    p = argparse.ArgumentParser(prog=f"python -m experiments.{NAME}",
                                description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--size", default="published", help="published or a spec size (tiny)")
    p.add_argument("--molecule", default="uracil")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-relax", action="store_true", help="RDKit geometry, no xTB relaxation")
    p.add_argument("--no-timing", action="store_true", help="accuracy only")
    p.add_argument("--seconds", type=float, default=5.0, help="time budget per timed step")
    p.add_argument("--out", type=Path, default=common.RESULTS / NAME / "results.json")
    args = p.parse_args(argv)
    frames = molecule_frames(args.molecule, args.batch, relax=not args.no_relax)
    rows = []
    for model in args.models:
        row = evaluate(model, args.size, frames)
        print(f"{model}: energy error {row['energy_err_of_spread']:.2e} of the spread, forces "
              f"{row['force_rel_rms']:.2e} rel. rms, gradient {row['grad_rel_l2']:.2e} rel. "
              f"(cosine {row['grad_cosine']:.5f})", flush=True)
        if not args.no_timing:
            cases = [MoleculeCase(model, args.size, args.molecule, args.batch,
                                  relax=not args.no_relax, seconds=args.seconds,
                                  precision=precision)
                     for precision in ("float32", "bfloat16")]
            timed = run_molecules(cases)
            for precision, t in zip(("float32", "bfloat16"), timed, strict=True):
                row[f"step_ms_{precision}"] = t.get("step_ms_median")
                row[f"error_{precision}"] = t.get("error")
            if row["step_ms_float32"] and row["step_ms_bfloat16"]:
                row["bf16_over_f32_time"] = row["step_ms_bfloat16"] / row["step_ms_float32"]
                print(f"  step: float32 {row['step_ms_float32']:.1f} ms, bfloat16 "
                      f"{row['step_ms_bfloat16']:.1f} ms", flush=True)
        rows.append(row)
    return common.write_results(args.out, NAME, argv, {
        "molecule": args.molecule, "batch": args.batch, "relaxed": not args.no_relax,
        "rows": rows})


if __name__ == "__main__":
    main()
