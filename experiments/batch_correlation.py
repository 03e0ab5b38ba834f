"""The survey's Case 1, measured: BatchNorm in training mode couples the molecules of a batch.

GemNet's authors found that BatchNorm "introduces correlations between separate molecules"
(survey, Section 2, Case 1). Here a GemNet-T (:data:`~geonorm_jax.models.gemnet.GEMNET_T_SMALL`,
scale factors fitted on the unperturbed batch, float64) predicts the energies of a batch of
``B`` frames of one molecule (uracil relaxed with GFN2-xTB in the ``cpu`` preset: the
equilibrium geometry plus seeded 0.05 Å displacements per frame). Molecule B (frame 1) is then
displaced by ``delta u`` (``u`` a fixed random direction with RMS 1 Å per coordinate, so
``delta`` is the RMS displacement per coordinate, Å) and we record how molecule A's (frame 0)
predicted energy changes, ``|E_A(delta) - E_A(0)|``, for:

* ``batch_norm`` at the atom place (atom embeddings after each interaction) in training mode
  (batch statistics over every atom of the batch);
* the same model in eval mode (running statistics, after one training-mode pass on the batch);
* ``layer_norm`` at the same place (per atom: batch-independent);
* no normalization.

A molecule's energy must not depend on the other molecules of the batch; it does, in
proportion to ``delta``, for BatchNorm in training mode only. The second table places every
catalogue ``features`` layer without context at the same place, measures ``|dE_A|`` at one
``delta`` and sets it beside the layer's batch-independence verdict from
:func:`geonorm_jax.audit.audit` (probe ``batch``).

Usage::

    python -m experiments.batch_correlation --preset cpu   # a few minutes on 2 cores

Results: ``experiments/results/batch_correlation/results.json`` and ``batch_correlation.png``.
"""

from __future__ import annotations

import functools
import traceback

import jax
import numpy as np

from experiments import common

NAME = "batch_correlation"
CURVES = ("batch_norm_train", "batch_norm_eval", "layer_norm", "none")

PRESETS = {
    "test": {"molecule": "ethanol", "relax": False, "batch": 2, "model": "tiny",
             "deltas": [1e-3, 1e-1], "zoo": ["batch_norm", "layer_norm"], "zoo_delta": 0.1,
             "noise": 0.05, "seed": 0},
    "cpu": {"molecule": "uracil", "relax": True, "batch": 8, "model": "small",
            "deltas": [float(x) for x in np.logspace(-4, 0, 9)], "zoo": None,
            "zoo_delta": 0.1, "noise": 0.05, "seed": 0},
}
PRESETS["paper"] = PRESETS["cpu"]

TINY = dict(num_blocks=1, emb_size_atom=8, emb_size_edge=8, emb_size_trip=4, emb_size_rbf=4,
            emb_size_cbf=4, emb_size_bil_trip=4, num_spherical=4, num_radial=4)


def model_kwargs(size: str) -> dict:
    """GemNet-T constructor arguments: ``"small"`` (GEMNET_T_SMALL) or ``"tiny"`` (tests)."""
    from geonorm_jax.models.gemnet import GEMNET_T_SMALL

    return {**GEMNET_T_SMALL, "max_atomic_number": 9, **(TINY if size == "tiny" else {})}


def frames(molecule: str, batch: int, relax: bool, noise: float, seed: int):
    """``(atomic_numbers [A], positions [B, A, 3], direction [A, 3])``: the geometry (relaxed
    with GFN2-xTB when ``relax``) plus ``N(0, noise^2)`` Å per frame and coordinate, and the
    perturbation direction ``u`` (RMS 1), all from ``seed``."""
    from geonorm_jax.data.molecules import structures

    z, r0 = structures.geometry(molecule, relax)
    rng = np.random.default_rng(seed)
    pos = r0[None] + noise * rng.standard_normal((batch,) + r0.shape)
    u = rng.standard_normal(r0.shape)
    return np.asarray(z, np.int64), pos, u / np.sqrt(np.mean(u**2))


@functools.partial(jax.jit, static_argnums=(0, 4))
def energies(model, variables, positions, atomic_numbers, batch_stats_mode: bool):
    """Molecular energies ``[B]`` of ``positions [B, A, 3]``; ``batch_stats_mode``: apply with
    the ``batch_stats`` collection mutable (BatchNorm in training mode)."""
    from geonorm_jax.models.molecular_graph import batch_frames

    g = batch_frames(positions, atomic_numbers, model.cutoff)
    if batch_stats_mode:
        return model.apply(variables, g, mutable=["batch_stats"])[0]
    return model.apply(variables, g)


def build(norm: str | None, training: bool, size: str, positions, z):
    """``(model, variables)``: GemNet-T with ``norm`` at the atom place, scale factors fitted
    on ``positions``; in eval mode, the running statistics are first set by one
    training-mode pass on the batch (momentum 0: the batch's own statistics)."""
    import jax.numpy as jnp

    from geonorm_jax import norms
    from geonorm_jax.models.gemnet import GemNetT
    from geonorm_jax.models.gemnet_scaling import fit_scale_factors
    from geonorm_jax.models.molecular_graph import batch_frames

    layer = None
    if norm is not None:
        layer = norms.make(norm, momentum=0.0) if norm == "batch_norm" else norms.make(norm)
    kw = model_kwargs(size)
    model = GemNetT(**kw, atom_norm=layer, training=True)
    g = batch_frames(jnp.asarray(positions), jnp.asarray(z), kw["cutoff"])
    variables = fit_scale_factors(model, jax.jit(model.init)(jax.random.key(0), g), g)
    if not training:
        if "batch_stats" in variables:
            _, upd = jax.jit(lambda v, g: model.apply(v, g, mutable=["batch_stats"]))(
                variables, g)
            variables = {**variables, **upd}
        model = model.clone(training=False)
    return model, variables


def response(model, variables, positions, z, direction, deltas) -> dict:
    """``|E_A(delta) - E_A(0)|`` and ``|E_B(delta) - E_B(0)|`` for each ``delta`` (molecule A =
    frame 0, B = frame 1, displaced by ``delta * direction``)."""
    import jax.numpy as jnp

    mode = bool(model.training and "batch_stats" in variables)
    zz = jnp.broadcast_to(jnp.asarray(z), positions.shape[:2])
    e0 = np.asarray(energies(model, variables, jnp.asarray(positions), zz, mode))
    da, db = [], []
    for delta in deltas:
        p = positions.copy()
        p[1] = p[1] + delta * direction
        e = np.asarray(energies(model, variables, jnp.asarray(p), zz, mode))
        da.append(float(abs(e[0] - e0[0])))
        db.append(float(abs(e[1] - e0[1])))
    return {"energy_A": float(e0[0]), "delta_energy_A": da, "delta_energy_B": db}


def _curve(name: str, cfg: dict, data) -> dict:
    z, pos, u = data
    norm, training = {"batch_norm_train": ("batch_norm", True),
                      "batch_norm_eval": ("batch_norm", False),
                      "layer_norm": ("layer_norm", True), "none": (None, True)}[name]
    model, variables = build(norm, training, cfg["model"], pos, z)
    return {"norm": norm, "training": training,
            **response(model, variables, pos, z, u, cfg["deltas"])}


def _zoo_row(name: str, cfg: dict, data) -> dict:
    from geonorm_jax import audit

    z, pos, u = data
    verdict = audit.audit(name, probes=("batch",)).properties["batch"]
    try:
        model, variables = build(name, True, cfg["model"], pos, z)
        r = response(model, variables, pos, z, u, [cfg["zoo_delta"]])
        change = r["delta_energy_A"][0]
    except Exception:  # noqa: BLE001 - recorded in the row
        return {"norm": name, "audit_batch": verdict.verdict, "error": traceback.format_exc()}
    return {"norm": name, "audit_batch": verdict.verdict, "audit_batch_value": verdict.value,
            "delta_energy_A": change, "energy_A": r["energy_A"]}


def zoo_layers(only=None) -> list[str]:
    """Catalogue ``features`` layers that need no context (they fit GemNet's atom place)."""
    from geonorm_jax.norms.catalog import CATALOG

    names = [e.name for e in CATALOG if e.kind == "features" and not e.context]
    return names if only is None else [n for n in names if n in only]


def plot(exp, curves: dict, deltas) -> str:
    """Log-log figure of ``|dE_A|`` against ``delta``; exact zeros drawn on a floor line."""
    plt = common.setup_matplotlib()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    values = [v for c in curves.values() for v in c["delta_energy_A"] if v > 0]
    floor = 10 ** (np.floor(np.log10(min(values))) - 2) if values else 1e-18
    styles = {"batch_norm_train": ("C3", "o", "BatchNorm, training mode"),
              "batch_norm_eval": ("C0", "s", "BatchNorm, eval mode"),
              "layer_norm": ("C2", "^", "LayerNorm"), "none": ("k", "x", "no normalization")}
    for name, c in curves.items():
        color, marker, label = styles[name]
        y = np.maximum(np.asarray(c["delta_energy_A"]), floor)
        ax.loglog(deltas, y, marker=marker, color=color, label=label, alpha=0.85)
    ax.axhline(floor, color="0.6", lw=0.8, ls=":")
    ax.text(deltas[0], floor * 1.6, "exactly 0 (drawn here)", fontsize=8, color="0.4")
    ax.set_xlabel("RMS displacement of molecule B per coordinate, delta (Å)")
    ax.set_ylabel("|E_A(delta) - E_A(0)| (model energy units)")
    ax.set_title("GemNet-T: molecule A's energy when molecule B of its batch moves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return common.save_figure(fig, exp, f"{NAME}.png")


def run(args, argv) -> dict:
    """Measure the curves and the zoo table (cells resumable), write results and the PNG."""
    jax.config.update("jax_enable_x64", True)
    cfg = PRESETS[args.preset]
    exp = common.Experiment(NAME, args, argv)
    data = frames(cfg["molecule"], cfg["batch"], cfg["relax"], cfg["noise"], cfg["seed"])
    curves = {}
    for name in CURVES:
        out = exp.cell(f"curve_{name}", lambda name=name: _curve(name, cfg, data))
        if out is not None:
            curves[name] = out
    zoo = []
    for name in zoo_layers(cfg["zoo"]):
        out = exp.cell(f"zoo_{name}", lambda name=name: _zoo_row(name, cfg, data))
        if out is not None:
            zoo.append(out)
    plots = [plot(exp, curves, cfg["deltas"])] if curves else []
    independent_ok = all(r.get("delta_energy_A", 1.0) <= 1e-10 for r in zoo
                         if r["audit_batch"] != "broken" and "error" not in r)
    bn = curves.get("batch_norm_train", {}).get("delta_energy_A", [])
    results = {
        "curves": curves, "deltas": cfg["deltas"], "zoo": zoo,
        "verdict": {
            "batch_norm_train_couples_molecules": bool(bn) and min(bn) > 0.0,
            "others_exactly_independent": all(
                max(c["delta_energy_A"]) == 0.0 for k, c in curves.items()
                if k != "batch_norm_train"),
            "audit_batch_independent_layers_unchanged": independent_ok,
        },
    }
    config = {**cfg, "model_kwargs": model_kwargs(cfg["model"]), "dtype": "float64",
              "molecule_A": "frame 0", "molecule_B": "frame 1 (displaced)"}
    doc = exp.finish(config, results, plots)
    print("| layer | training | |dE_A| at the largest delta |")
    print("|---|---|---|")
    for c in curves.values():
        print(f"| {c['norm'] or 'none'} | {c['training']} | {c['delta_energy_A'][-1]:.3e} |")
    return doc


def main(argv: list[str] | None = None) -> int:
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
