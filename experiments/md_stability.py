"""The survey's question asked in molecular dynamics: does normalization keep MD stable, beyond
what the force MAE says?

Fu et al. (*Forces are not Enough*, TMLR 2023) show that models with similar force MAE can
differ widely in MD stability. Here each molecular model of the survey's case studies
(:mod:`experiments.survey_case_studies`) is trained through the same trainer
(:func:`geonorm_jax.train.train`) with and without the normalization the survey names, loaded
with :func:`geonorm_jax.potentials.load_potential` and run in JAX MD
(:func:`geonorm_jax.potentials.simulate`, not through ASE):

* ``<model>_on``: ``molecules.target_norm`` (per-species energy shift and scale fitted on the
  training set) and ``model.builtin_norm`` (Allegro's and SchNet's neighbour normalization,
  GemNet-T's scale factors and residual scaling) both on; ``<model>_off``: both off; for
  Allegro, SchNet and GemNet-T;
* ``allegro_<layer>``: Allegro with both normalizations plus one catalogue layer at its place
  (``latent``: a ``features`` layer on the edge latents; ``tensor``: a ``vectors`` layer on the
  tensor track), layers the survey's norm zoo trains.

One cell is one trained model (seed 0) and its MD: ``replicas`` Langevin (BAOAB) runs at
500 K, friction 0.01/fs, time step 0.5 fs, each from a test-split frame (evenly spaced over the
test split) with Maxwell-Boltzmann velocities; the same starts and random keys for every cell.
Fu et al. use a Nosé-Hoover thermostat; this experiment uses Langevin (the integrator of
:func:`~geonorm_jax.potentials.simulate`). Recorded per cell:

* time to instability (ps): Fu et al.'s criterion, the first recorded frame where a bond
  length deviates by more than 0.5 Å from its reference, the mean over the run's *training*
  frames (bonds from the first training frame); a stable replica counts the simulated time;
* h(r) error: the L1 distance ``∫ |h - h_ref| dr`` between the histogram of interatomic
  distances over a replica's stable frames and that of the *reference trajectory*, the run's
  training and test frames together (GFN2-xTB Langevin MD at 500 K, the data generator's);
* the mean temperature over the stable frames (3A degrees of freedom under Langevin);
* the model's test force and energy MAE at its best validation epoch (seed 0).

A replica run stops early once every replica is unstable (later frames say nothing more), and
``md_budget_s`` (``cpu`` preset) ends a cell's MD at a chunk boundary after that many seconds;
the simulated time actually reached is recorded, and a stable replica's time to instability is
censored at it.

Verdict per model (on against off) and per zoo layer (against ``allegro_on``): MD stability
*differs* when the mean times to instability differ by a factor of 2 or more or the fractions
of stable replicas by 0.5 or more; the force MAE *differs* when the MAEs differ by a factor of
1.5 or more. Status: ``no: equally stable`` (stability does not separate them);
``no: more stable with it, as its lower force MAE predicts`` (both differ, the lower MAE is
the more stable; or ``less stable ... higher``);
``yes: stability differs at similar force MAE``; ``yes: stability opposes force MAE``. The same
rule on the h(r) error (factor 2) gives ``h_status``. Across all cells, Spearman's rank
correlation of force MAE with time to instability and with h(r) error.

Usage::

    python -m experiments.md_stability --preset test    # water, seconds (CI)
    python -m experiments.md_stability --preset cpu     # uracil, 2 CPU cores (see PRESETS)
    python -m experiments.md_stability --preset paper   # Fu et al.'s protocol, GPU

The ``cpu`` and ``paper`` presets reuse the trained runs of ``survey_case_studies`` (same
preset) when their run directories hold a finished run of the same data and model
configuration (training length and seeds may differ; seed 0 drives the MD).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from experiments import common
from experiments import survey_case_studies as survey

NAME = "md_stability"

#: (target_norm, builtin_norm) of each normalization setting
NORMS = {"on": (True, True), "off": (False, False)}
MODELS = ("allegro", "schnet", "gemnet")
#: cell name -> the survey's cell name (for reusing its runs)
SURVEY_KEYS = {"on": "both", "off": "none"}

# MD settings shared by the presets: Fu et al.'s temperature and time step, Langevin
_MD = {"temperature_K": 500.0, "dt_fs": 0.5, "friction_per_fs": 0.01, "seed": 0,
       "thermostat": "langevin", "md_budget_s": None}

PRESETS = {
    # seconds: the survey's test sizes (water, tiny models, 2 epochs), one zoo layer, 200 MD
    # steps (compilation dominates: about 2 CPU-minutes in all)
    "test": dict(survey.PRESETS["test"], seeds=[0], zoo=[("layer_norm", "latent")],
                 md=dict(_MD, replicas=2, steps=200, record_every=10, chunks=2)),
    # 2 CPU cores: the survey's cpu sizes (uracil, 1000 training frames, Allegro 32 latents,
    # SchNet 64 x 3, GemNet-T at a quarter of its widths; 30 epochs, GemNet-T 10), one seed;
    # MD: 4 replicas x 10 ps (20 000 steps of 0.5 fs, a frame every 20 fs), at most 7 minutes
    # of MD per cell (then the simulated time reached is recorded). Measured on 2 busy cores
    # (load 12-18), 4 replicas together: Allegro 2.4 ms per step (10 ps: 48 s, compilation
    # about 60 s), SchNet 1.8 ms (35 s, 13 s), GemNet-T 15.8 ms (316 s, 48 s): about 20 minutes
    # of MD in all, with training (the survey's cpu cells took 4-8 minutes each with 2 seeds)
    # about an hour, excluding the one-time uracil data generation (about 65 minutes)
    "cpu": dict(survey.PRESETS["cpu"], seeds=[0], gemnet_run={"epochs": 10, "seeds": [0]},
                zoo=[("layer_norm", "latent"), ("gvp_vector_layer_norm", "tensor")],
                md=dict(_MD, replicas=4, steps=20_000, record_every=40, chunks=20,
                        md_budget_s=420.0)),
    # Fu et al.'s protocol (MD17_PROTOCOL, Langevin instead of Nosé-Hoover): 300 ps, 0.5 fs,
    # a frame every 100 steps, 5 replicas; the published model sizes (survey's paper preset)
    "paper": dict(survey.PRESETS["paper"], seeds=[0],
                  zoo=[("layer_norm", "latent"), ("gvp_vector_layer_norm", "tensor"),
                       ("equivariant_layer_norm", "tensor")],
                  md=dict(_MD, replicas=5, steps=600_000, record_every=100, chunks=20)),
}

#: verdict thresholds: stability differs (time ratio, stable-fraction gap), MAE differs, h(r)
STABILITY_RATIO = 2.0
STABLE_FRACTION_GAP = 0.5
MAE_RATIO = 1.5
H_RATIO = 2.0


def cells(p: dict) -> list[dict]:
    """The cells of preset ``p``: ``{key, model, norm, target_norm, builtin_norm, layer,
    place}``."""
    out = []
    for model in MODELS:
        for norm, (target, own) in NORMS.items():
            out.append({"key": f"{model}_{norm}", "model": model, "norm": norm,
                        "target_norm": target, "builtin_norm": own, "layer": None,
                        "place": None})
    for layer, place in p["zoo"]:
        out.append({"key": f"allegro_{layer}", "model": "allegro", "norm": f"on + {layer}",
                    "target_norm": True, "builtin_norm": True, "layer": layer,
                    "place": place})
    return out


def config_of(p: dict, c: dict):
    """The run configuration of cell ``c`` (:func:`survey_case_studies.make_config`)."""
    return survey.make_config(p, c["model"], c["target_norm"], c["builtin_norm"],
                              norm=c["layer"], place=c["place"])


def survey_run(args, c: dict, config) -> Path | None:
    """A finished run directory of ``survey_case_studies`` (same preset) with the same data
    and model configuration as ``config`` (training length and seeds may differ), or None."""
    from geonorm_jax import train

    if c["layer"] is not None:
        key = f"zoo_{c['layer']}"
    else:
        key = f"{c['model']}_{SURVEY_KEYS[c['norm']]}"
    src = common.source_args(args, survey.NAME, args.preset).runs
    root = Path(src) if src else common.RUNS / survey.NAME / args.preset
    run_dir = root / key
    if not (run_dir / "summary.json").exists():
        return None
    try:
        saved = train.check_resume(run_dir, None)
        records = train.read_metrics(run_dir)
    except (ValueError, OSError):
        return None
    if not records or records[-1]["epoch"] != saved.train.epochs or 0 not in saved.train.seeds:
        return None
    changes = [d for d in train.config_codec.diff(saved, config) if not d.startswith("train.")]
    return None if changes else run_dir


def initial_frames(test: np.ndarray, replicas: int) -> np.ndarray:
    """Indices of the replicas' starting frames: evenly spaced over the test split."""
    return np.unique(np.linspace(0, len(test) - 1, replicas).round().astype(int)) \
        if replicas <= len(test) else np.arange(replicas) % len(test)


def reference(pot) -> dict:
    """Bonds, their reference lengths (mean over the training frames) and the reference h(r)
    (training and test frames together)."""
    import jax.numpy as jnp

    from geonorm_jax.potentials import observables as obs

    z = pot.atomic_numbers
    train_x, test_x = pot.frames["train"], pot.frames["test"]
    pairs = obs.bonds(z, train_x[0])
    lengths = np.asarray(obs.bond_lengths(jnp.asarray(train_x), pairs)).mean(0)
    h_ref = np.asarray(obs.distance_histogram(jnp.asarray(np.concatenate([train_x, test_x]))))
    return {"pairs": pairs, "lengths": lengths, "h_ref": h_ref}


def molecular_dynamics(pot, md: dict, ref: dict | None = None) -> dict:
    """Langevin MD of ``md['replicas']`` replicas from test frames, in ``md['chunks']`` jitted
    scans (stopping early when every replica is unstable or ``md_budget_s`` is spent), and its
    observables (module docstring)."""
    import jax
    import jax.numpy as jnp

    from geonorm_jax.potentials import observables as obs
    from geonorm_jax.potentials.md import masses_of, ns_per_day, simulate

    ref = ref or reference(pot)
    test = pot.frames["test"]
    starts = initial_frames(test, md["replicas"])
    x = np.asarray(test[starts], np.float32)
    z = pot.atomic_numbers
    m = masses_of(z)
    every = md["record_every"]
    per = max(1, md["steps"] // md["chunks"] // every) * every
    chunks = math.ceil(md["steps"] / per)
    energy_forces = pot.energy_forces_fn()
    key = jax.random.key(md["seed"])
    pairs, lengths = jnp.asarray(ref["pairs"]), jnp.asarray(ref["lengths"])
    stability = jax.vmap(obs.time_to_instability, in_axes=(0, None, None, None))
    pos, temps, seconds, v, stop = [], [], [], None, "completed"
    t_start = time.perf_counter()
    for c in range(chunks):
        t0 = time.perf_counter()
        traj = simulate(energy_forces, x, m, steps=per, dt=md["dt_fs"], record_every=every,
                        thermostat=md["thermostat"], temperature=md["temperature_K"],
                        friction=md["friction_per_fs"], key=jax.random.fold_in(key, c),
                        velocities=v)
        jax.block_until_ready(traj.positions)
        seconds.append(time.perf_counter() - t0)
        x, v = traj.positions[:, -1], traj.velocities[:, -1]
        pos.append(np.asarray(traj.positions if c == 0 else traj.positions[:, 1:]))
        temps.append(np.asarray(traj.temperature if c == 0 else traj.temperature[:, 1:]))
        positions = np.concatenate(pos, axis=1)
        times_ps = np.arange(positions.shape[1]) * every * md["dt_fs"] / 1000.0
        stab = stability(jnp.asarray(positions), pairs, lengths, jnp.asarray(times_ps))
        if not np.any(np.asarray(stab.stable)):
            stop = "every replica unstable"
            break
        budget = md.get("md_budget_s")
        if budget is not None and time.perf_counter() - t_start > budget and c < chunks - 1:
            stop = f"MD budget of {budget:g} s spent"
            break
    temperature = np.concatenate(temps, axis=1)
    num_frames = positions.shape[1]
    first = np.asarray(stab.first_frame)
    masks = jnp.arange(num_frames)[None, :] < jnp.asarray(first)[:, None]
    h = np.asarray(jax.vmap(obs.distance_histogram, in_axes=(0, None, 0))(
        jnp.asarray(positions), obs.DEFAULT_HR_BINS, masks))
    h_err = np.asarray(obs.h_error(h, ref["h_ref"]))
    mean_t = []
    for r in range(len(starts)):
        seg = temperature[r, 1:first[r]]
        seg = seg[np.isfinite(seg)]
        mean_t.append(float(seg.mean()) if seg.size else None)
    steps_done = (num_frames - 1) * every
    steady = seconds[1:] or seconds
    finite_h = [hh for hh in h if np.all(np.isfinite(hh))]
    return {
        "starts": starts.tolist(), "simulated_ps": float(times_ps[-1]), "steps": steps_done,
        "frames": int(num_frames), "stopped": stop,
        "stable": [bool(s) for s in np.asarray(stab.stable)],
        "time_to_instability_ps": [float(t) for t in np.asarray(stab.time)],
        "h_error": [float(e) if np.isfinite(e) else None for e in h_err],
        "mean_temperature_K": mean_t,
        "h": np.mean(finite_h, axis=0).round(5).tolist() if finite_h else None,
        "md_wall_s": round(float(sum(seconds)), 2),
        "compile_and_first_chunk_s": round(seconds[0], 2),
        "ns_per_day": ns_per_day(per * len(steady), md["dt_fs"], sum(steady), len(starts)),
        "bonds": int(len(ref["pairs"])),
    }


def run_cell(args, p: dict, c: dict, runs: Path, data_dir, md: dict) -> dict:
    """Train cell ``c`` (or reuse a finished ``survey_case_studies`` run), then its MD."""
    from geonorm_jax.potentials import load_potential

    config = config_of(p, c)
    reused = survey_run(args, c, config) if args.preset != "test" else None
    out = {k: c[k] for k in ("model", "norm", "target_norm", "builtin_norm", "layer", "place")}
    try:
        if reused is not None:
            from geonorm_jax import train

            trained = survey.run_cell(train.check_resume(reused, None), reused, data_dir)
            run_dir, out["trained_by"] = reused, survey.NAME
        else:
            run_dir = runs / c["key"]
            trained = survey.run_cell(config, run_dir, data_dir)
            out["trained_by"] = NAME
    except Exception as e:  # noqa: BLE001 - a layer that cannot be placed: record it
        if c["layer"] is None:
            raise
        return dict(out, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    out.update({k: trained[k] for k in ("run_dir", "num_params", "wall_time_s", "step_ms",
                                        "per_seed", "task_info")})
    out["train_config"] = trained["config"]
    pot = load_potential(run_dir, seed=0, data_dir=data_dir)
    ref = reference(pot)
    out["md"] = molecular_dynamics(pot, md, ref)
    out["h_ref"] = ref["h_ref"].round(5).tolist()  # beside the cell's h(r), for the plot
    return out


def row(key: str, c: dict) -> dict:
    """One table row: force and energy MAE (seed 0) beside the MD observables."""
    seed0 = next((s for s in c.get("per_seed") or [] if s.get("seed") == 0), {})
    m = c.get("md") or {}
    tti = m.get("time_to_instability_ps") or []
    return {
        "cell": key, "model": c["model"], "norm": c["norm"], "layer": c.get("layer"),
        "place": c.get("place"), "params": c.get("num_params"),
        "trained_by": c.get("trained_by"),
        "force_mae_meV_per_A": seed0.get("test_force_mae"),
        "energy_mae_meV": seed0.get("test_energy_mae"),
        "replicas": len(tti), "simulated_ps": m.get("simulated_ps"),
        "stable_replicas": sum(m.get("stable") or []),
        "stable_fraction": (sum(m["stable"]) / len(m["stable"])) if m.get("stable") else None,
        "time_to_instability_ps": common.mean_std(tti),
        "h_error": common.mean_std(m.get("h_error") or []),
        "mean_temperature_K": common.mean_std(m.get("mean_temperature_K") or []),
        "md_wall_s": m.get("md_wall_s"), "ns_per_day": m.get("ns_per_day"),
        "stopped": m.get("stopped"), "error": c.get("error"),
    }


def _ratio(a, b):
    return a / b if common.finite(a) and common.finite(b) and b > 0 else None


def verdict(with_: dict | None, without: dict | None) -> dict:
    """Does the normalization (``with_``'s row against ``without``'s) change MD stability
    beyond what the force MAE says? (thresholds in the module docstring)"""
    if not with_ or not without or with_.get("error") or without.get("error"):
        return {"status": "not tested"}
    t_w, t_o = with_["time_to_instability_ps"]["mean"], without["time_to_instability_ps"]["mean"]
    f_w, f_o = with_["stable_fraction"], without["stable_fraction"]
    h_w, h_o = with_["h_error"]["mean"], without["h_error"]["mean"]
    mae = _ratio(without["force_mae_meV_per_A"], with_["force_mae_meV_per_A"])
    stab = _ratio(t_w, t_o) if common.finite(t_o) and t_o > 0 else (
        math.inf if common.finite(t_w) and t_w > 0 else None)
    out = {"force_mae_ratio_without_over_with": mae,
           "time_to_instability_with_ps": t_w, "time_to_instability_without_ps": t_o,
           "stability_ratio_with_over_without": stab,
           "stable_fraction_with": f_w, "stable_fraction_without": f_o,
           "h_error_with": h_w, "h_error_without": h_o,
           "h_error_ratio_without_over_with": _ratio(h_o, h_w),
           "simulated_ps": min(with_["simulated_ps"] or 0, without["simulated_ps"] or 0)}
    if mae is None or stab is None:
        return dict(out, status="not tested", h_status="not tested")
    mae_dir = 0 if 1 / MAE_RATIO < mae < MAE_RATIO else (1 if mae > 1 else -1)

    def judge(ratio, differs, what=("stable", "stability")):
        if not differs:
            return f"no: equally {what[0]}"
        d = 1 if ratio > 1 else -1
        if mae_dir == 0:
            return f"yes: {what[1]} differs at similar force MAE"
        if d != mae_dir:
            return f"yes: {what[1]} opposes force MAE"
        more, lower = ("more", "lower") if d == 1 else ("less", "higher")
        return f"no: {more} {what[0]} with it, as its {lower} force MAE predicts"

    gap = abs((f_w or 0) - (f_o or 0))
    differs = not (1 / STABILITY_RATIO < stab < STABILITY_RATIO) or gap >= STABLE_FRACTION_GAP
    out["status"] = judge(stab, differs)
    h_ratio = out["h_error_ratio_without_over_with"]
    if h_ratio is None:
        out["h_status"] = "not tested"
    else:
        out["h_status"] = judge(h_ratio, not (1 / H_RATIO < h_ratio < H_RATIO),
                                ("faithful h(r)", "h(r) error"))
    return out


def spearman(x, y) -> float | None:
    """Spearman's rank correlation of the pairs with both values finite (None if < 3)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if common.finite(a) and common.finite(b)]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return float(rho) if np.isfinite(rho) else None


def compare(rows: dict) -> dict:
    """Verdicts: each model on against off, each zoo layer against ``allegro_on``, and the
    rank correlations over all cells."""
    out = {}
    for model in MODELS:
        out[model] = verdict(rows.get(f"{model}_on"), rows.get(f"{model}_off"))
    for key, r in rows.items():
        if r["layer"] is not None:
            out[key] = dict(verdict(r, rows.get("allegro_on")), against="allegro_on")
    ok = [r for r in rows.values() if not r.get("error")]
    mae = [r["force_mae_meV_per_A"] for r in ok]
    out["all_cells"] = {
        "cells": len(ok),
        "spearman_force_mae_vs_time_to_instability": spearman(
            mae, [r["time_to_instability_ps"]["mean"] for r in ok]),
        "spearman_force_mae_vs_h_error": spearman(mae, [r["h_error"]["mean"] for r in ok]),
    }
    return out


def plot(exp, rows: dict, cells_: dict, md: dict) -> list[str]:
    """Time to instability and h(r) error against force MAE (one point per cell, replica
    spread as error bars); the h(r) of each cell against the reference."""
    plt = common.setup_matplotlib()
    ok = {k: r for k, r in rows.items() if not r.get("error")
          and common.finite(r["force_mae_meV_per_A"])}
    colors = {"allegro": "tab:blue", "schnet": "tab:orange", "gemnet": "tab:green"}
    markers = {"on": "o", "off": "x"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    floor = md["record_every"] * md["dt_fs"] / 1000.0  # one recorded frame (ps)
    for key, r in ok.items():
        mk = markers.get(r["norm"], "^")
        for ax, field in zip(axes, ("time_to_instability_ps", "h_error"), strict=True):
            y = r[field]
            if not common.finite(y["mean"]):
                continue
            val = max(y["mean"], floor) if field == "time_to_instability_ps" else y["mean"]
            ax.errorbar([r["force_mae_meV_per_A"]], [val], yerr=[[min(y["std"], val * 0.99)],
                                                               [y["std"]]],
                        fmt=mk, color=colors[r["model"]], ms=7, capsize=3)
            ax.annotate(key, (r["force_mae_meV_per_A"], val), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    sim = max((r["simulated_ps"] or 0 for r in ok.values()), default=0)
    if sim:
        axes[0].axhline(sim, color="gray", lw=0.8, ls=":", label=f"simulated ({sim:g} ps)")
        axes[0].legend(fontsize=7, loc="lower left")
    axes[0].set(xscale="log", yscale="log", xlabel="test force MAE (meV/Å)",
                ylabel="time to instability (ps, mean over replicas)",
                title=f"Langevin {md['temperature_K']:g} K, {md['replicas']} replicas")
    axes[1].set(xscale="log", yscale="log", xlabel="test force MAE (meV/Å)",
                ylabel="h(r) error (∫|h - h_ref| dr)",
                title="distance histogram against the xTB frames")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=m)
               for m, c in colors.items()]
    handles += [plt.Line2D([], [], color="k", marker=mk, ls="", label=f"norm {n}")
                for n, mk in (("on", "o"), ("off", "x"), ("on + layer", "^"))]
    axes[1].legend(handles=handles, fontsize=7)
    names = [common.save_figure(fig, exp, "md_stability.png")]
    with_h = {k: c for k, c in cells_.items() if (c.get("md") or {}).get("h")}
    if with_h:
        from geonorm_jax.potentials.observables import DEFAULT_HR_BINS

        r_mid = 0.5 * (DEFAULT_HR_BINS[1:] + DEFAULT_HR_BINS[:-1])
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        ref = next(iter(with_h.values())).get("h_ref")
        if ref:
            ax.plot(r_mid, ref, color="k", lw=2, label="reference (xTB frames)")
        for key, c in with_h.items():
            ax.plot(r_mid, c["md"]["h"], lw=1, ls="-" if c["norm"] != "off" else "--",
                    color=colors[c["model"]], alpha=0.8, label=key)
        ax.set(xlim=(0, 6), xlabel="r (Å)", ylabel="h(r) (1/Å)",
               title="interatomic distances over the stable frames")
        ax.legend(fontsize=7, ncol=2)
        names.append(common.save_figure(fig, exp, "md_stability_hr.png"))
    return names


def run(args, argv) -> dict:
    """Run every cell of the preset (skipping finished ones), then verdicts and plots."""
    p = PRESETS[args.preset]
    md = p["md"]
    exp = common.Experiment(NAME, args, argv)
    data_dir = survey.dataset(p["data"], exp.cache)
    done = {}
    for c in cells(p):
        out = exp.cell(c["key"], lambda c=c: run_cell(args, p, c, exp.runs, data_dir, md))
        if out is not None:
            done[c["key"]] = out
    rows = {k: row(k, c) for k, c in done.items()}
    verdicts = compare(rows)
    plots = plot(exp, rows, done, md)
    config = {k: v for k, v in p.items() if k not in ("data", "second", "zoo")}
    config.update(data=dict(p["data"], method="GFN2-xTB", temperature_K=500),
                  zoo=[f"{layer}@{place}" for layer, place in p["zoo"]],
                  reference="bond lengths: mean over the training frames; h(r): training "
                            "and test frames together (the generating xTB trajectories)",
                  thermostat_note="Langevin (BAOAB) instead of Fu et al.'s Nose-Hoover",
                  thresholds={"stability_ratio": STABILITY_RATIO,
                              "stable_fraction_gap": STABLE_FRACTION_GAP,
                              "mae_ratio": MAE_RATIO, "h_ratio": H_RATIO})
    return exp.finish(config, {"rows": list(rows.values()), "verdicts": verdicts}, plots)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
