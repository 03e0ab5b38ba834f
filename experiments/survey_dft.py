"""The survey's Figure 1 at DFT scale, the parts that do not train: which cells, the verdict,
the figure (:func:`experiments.survey_case_studies.run_dft` trains the cells).

Allegro on ``md17-dft`` frames (PBE/def2-SVP) with three kinds of energy targets
(:data:`DFT_TARGETS`): raw totals in kcal/mol (as MD17 ships them), raw totals in eV, and
energies shifted per species (eV); each with Allegro's normalizations, one of them or neither
(:data:`DFT_CELLS`). The gap of a kind of target is ``log10(loss_none / loss_both)`` at the
first epoch (training loss) and at the last (test loss).

What the energy zero predicts. Four uracil frames labelled with ``geonorm-jax data generate
--dataset md17-dft --molecule uracil --frames 4`` have a mean total energy of -2.598e5 kcal/mol
(-11266.6 eV; GFN2-xTB on the same frames: -669.1 eV) and a force mean square of 1373
(kcal/mol/Å)² (2.58 eV²/Å²). A network without the shift starts near ``(E/A)²`` with this
per-atom loss: 5.5 orders of magnitude above the force term a shifted model starts from, 7.7
orders with a per-frame total-energy loss (``E²``). Changing the unit multiplies every term by
the same factor, so the ratio at the start is the same in kcal/mol and in eV; the unit can
only change how far the unshifted network gets by the end. Measured on 20 frames:
:mod:`experiments.survey_dft_small`.
"""

from __future__ import annotations

import math

from experiments import common

__all__ = ["DFT_TARGETS", "DFT_CELLS", "TARGET_NAMES", "dft_cells", "orders", "gap_status",
           "compare_dft", "plot_dft"]

#: kind of energy target -> (``molecules.energy_unit``, ``molecules.target_norm`` when the
#: cell has no target normalization: raw totals (False) or the shift only)
DFT_TARGETS = {"kcal": ("kcal/mol", False), "ev": ("eV", False), "shifted": ("eV", "shift")}
#: cell -> (target normalization on, Allegro's 1/sqrt(N̄) on)
DFT_CELLS = {"both": (True, True), "target": (True, False), "neighbor": (False, True),
             "none": (False, False)}
TARGET_NAMES = {"kcal": "raw total energies in kcal/mol", "ev": "raw total energies in eV",
                "shifted": "energies shifted per species (eV)"}


def dft_cells(names) -> list[tuple[str, str, str, object, bool]]:
    """The cells ``names`` (of :data:`DFT_CELLS`) for every kind of target, as ``(key,
    targets, unit, target_norm, builtin_norm)``. With the shift and scale on, the shifted
    targets are the eV cell itself, so ``shifted`` has only the cells without them."""
    out = []
    for targets, (unit, off) in DFT_TARGETS.items():
        for name in names:
            if name not in DFT_CELLS:
                raise ValueError(f"DFT cell must be one of {list(DFT_CELLS)}, got {name!r}")
            target, own = DFT_CELLS[name]
            if targets == "shifted" and target:
                continue
            out.append((f"dft_{targets}_{name}", targets, unit, True if target else off, own))
    return out


def orders(a, b):
    """``log10(a / b)`` or None (either not finite or not positive)."""
    if not (common.finite(a) and common.finite(b)) or a <= 0 or b <= 0:
        return None
    return math.log10(a / b)


def gap_status(start, end, claims: dict) -> str:
    """The verdict on Allegro's loss gap without its normalizations, ``start`` and ``end`` in
    orders of magnitude, against ``claims["allegro_start_orders"]`` and
    ``claims["allegro_end_orders"]``: within 2 orders of both, ``"reproduced"``; at least 1
    order at both ends, ``"partially reproduced"``; else ``"not reproduced"``; ``"not
    tested"`` if either is None."""
    claim_s, claim_e = claims["allegro_start_orders"], claims["allegro_end_orders"]
    if start is None or end is None:
        return "not tested"
    if abs(start - claim_s) <= 2 and abs(end - claim_e) <= 2:
        return "reproduced"
    if start >= 1 and end >= 1:
        return "partially reproduced"
    return "not reproduced"


def _zero_orders(info: dict, first_both) -> dict:
    """The start gap the energy zero alone predicts: ``(E/A)²`` (this per-atom loss) and
    ``E²`` (a per-frame energy loss) over the first training loss with normalization, with
    ``E`` the training split's mean energy (in the cell's unit) and ``A`` atoms."""
    e, atoms = (info or {}).get("energy_mean"), (info or {}).get("atoms")
    if not (common.finite(e) and atoms):
        return {"per_atom": None, "per_frame": None}
    return {"per_atom": orders((e / atoms) ** 2, first_both),
            "per_frame": orders(e**2, first_both)}


def compare_dft(rows: dict, cells: dict, claims: dict) -> dict:
    """For each kind of target: the orders of magnitude of the loss gap without Allegro's
    normalizations at the start and the end, a status against the survey (within 2 orders of
    both claims: reproduced), and which kind comes closest to the survey's 11 and 5.

    ``rows``: cell key -> table row (``first_train_loss``, ``final_test_loss``); ``cells``:
    cell key -> cell (its ``task_info``); ``claims``: ``allegro_start_orders``,
    ``allegro_end_orders``."""
    claim_s, claim_e = claims["allegro_start_orders"], claims["allegro_end_orders"]
    out, best = {}, None
    for targets in DFT_TARGETS:
        both_key = f"dft_{'ev' if targets == 'shifted' else targets}_both"
        none_key = f"dft_{targets}_none"
        if both_key not in rows or none_key not in rows:
            continue
        both, none = rows[both_key], rows[none_key]
        start = orders(none["first_train_loss"], both["first_train_loss"])
        end = orders(none["final_test_loss"], both["final_test_loss"])
        out[targets] = {"status": gap_status(start, end, claims), "start_orders": start,
                        "end_orders": end,
                        "energy_unit": DFT_TARGETS[targets][0],
                        "zero_predicts_start_orders": _zero_orders(
                            cells[none_key].get("task_info"), both["first_train_loss"])}
        if start is not None and end is not None:
            distance = abs(start - claim_s) + abs(end - claim_e)
            if best is None or distance < best[1]:
                best = (targets, distance)
    if best is None:
        verdict, closest = "not tested", []
    else:  # every kind within 0.1 orders of the closest (the unit does not change the ratio)
        closest = [k for k, t in out.items() if t["start_orders"] is not None
                   and t["end_orders"] is not None and abs(t["start_orders"] - claim_s)
                   + abs(t["end_orders"] - claim_e) <= best[1] + 0.1]
        verdict = f"closest to the survey's {claim_s:g} and {claim_e:g} orders: " + "; ".join(
            f"{TARGET_NAMES[k]} (start {out[k]['start_orders']:.1f}, end "
            f"{out[k]['end_orders']:.1f} orders: {out[k]['status']})" for k in closest)
    return {"targets": out, "closest": closest, "verdict": verdict,
            "claim_start_orders": claim_s, "claim_end_orders": claim_e}


def plot_dft(exp, cells: dict) -> list[str]:
    """Figure 1 at DFT scale: train (solid) and test (dashed) loss on a log scale, one panel
    per kind of energy target."""
    if not cells:
        return []
    plt = common.setup_matplotlib()
    kinds = [t for t in DFT_TARGETS if any(c["targets"] == t for c in cells.values())]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4),
                             constrained_layout=True, squeeze=False)
    molecule = next(iter(cells.values()))["molecule"]
    for ax, t in zip(axes[0], kinds, strict=True):
        mine = [(k, c) for k, c in cells.items() if c["targets"] == t]
        for j, (key, c) in enumerate(mine):
            cur, color, name = c["curves"], plt.cm.tab10(j), key.rsplit("_", 1)[1]
            for i, seed in enumerate(cur["train_loss"]):
                ax.plot(cur["epoch"], [v if common.finite(v) else math.nan
                                       for v in cur["train_loss"][seed]], color=color, lw=1,
                        label=f"{name} train" if i == 0 else None)
                ax.plot(cur["eval_epoch"], [v if common.finite(v) else math.nan
                                            for v in cur["test_mse"][seed]], color=color,
                        lw=1, ls="--", label=f"{name} test" if i == 0 else None)
        unit = DFT_TARGETS[t][0]
        ax.set(yscale="log", xlabel="epoch", ylabel=f"loss ({unit})², ({unit}/Å)²",
               title=f"Allegro on DFT {molecule}: {TARGET_NAMES[t]}")
        ax.legend(fontsize=7)
    return [common.save_figure(fig, exp, "survey_figure1_dft.png")]
