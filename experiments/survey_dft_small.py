"""Figure 1 at DFT scale, small: the ``dft_*`` cells of :mod:`experiments.survey_case_studies`
(both and none, for each kind of energy target) on 20 PBE/def2-SVP uracil frames (12 / 4 / 4),
with the ``test`` preset's Allegro (8 latents, 1 layer) and 30 epochs. A stand-in for the
``cpu`` preset's DFT cells while their 180 frames are not labelled (20 frames: about 20 minutes
on 2 cores).

Usage::

    python -m experiments.survey_dft_small --out /tmp/dft_small --runs /tmp/dft_small_runs \\
        --cache /tmp/dft_cache

Measured (``--cache /tmp/dftE/cache``; a shared 2-core machine; the 20 frames labelled in
1101 s, 0.018 frames/s, by ``geonorm-jax data generate --dataset md17-dft --molecule uracil
--frames 20 --chunk-frames 2``). Loss at the first epoch (training) and the last (test):

========================  ==============  ==============
targets                   start gap       end gap
========================  ==============  ==============
raw totals, kcal/mol      5.63 orders     5.84 orders
raw totals, eV            5.63 orders     5.58 orders
shifted per species, eV   0.004 orders    0.003 orders
========================  ==============  ==============

The energy zero alone predicts a start gap of 5.63 orders with this per-atom loss (7.79 with a
per-frame total-energy loss). Verdict: the unshifted total energy carries the whole gap
(shifting per species removes it); the end gap, 5.6 to 5.8 orders, is the survey's 5; the
start gap is 5.6 orders, not 11, in either unit (the unit scales every term alike).
"""

from __future__ import annotations

import json

from experiments import common, survey_case_studies

NAME = "survey_dft_small"

DFT = {"data": {"dataset": "md17-dft", "molecule": "uracil", "frames": 20},
       "train": 12, "valid": 4, "test": 4, "epochs": 30, "cells": ["both", "none"]}


def run(args, argv) -> dict:
    """The DFT cells on 20 uracil frames; results.json holds rows and verdicts."""
    p = dict(survey_case_studies.PRESETS["test"], dft=DFT)
    exp = common.Experiment(NAME, args, argv)
    res = survey_case_studies.run_dft(exp, p)
    print(json.dumps(res["verdicts"], indent=1))
    return exp.finish({"dft": DFT, "model": "test preset Allegro"},
                      {"rows": res["rows"], "verdicts": res["verdicts"]}, [])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``--preset`` is ignored: one size)."""
    return common.cli_main(NAME, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
