"""``experiments/survey_anchor.py``: the published-accuracy anchor's configuration, its table
beside the published errors and its report lines; the verdict helper shared by the xTB and
the DFT comparisons."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import survey_anchor, survey_case_studies, survey_dft  # noqa: E402


def test_cpu_anchor_config_is_the_example_protocol_on_the_dft_split():
    p = survey_case_studies.PRESETS["cpu"]
    a = p["dft"]["anchor"]
    c = survey_case_studies.anchor_config(p)
    assert (c.model.hidden, c.model.num_layers) == (512, 2)
    kw = c.model.model_kwargs
    assert (kw["cutoff"], kw["num_channels"], kw["tensor_irreps"]) == (
        6.0, 32, "0e+0o+1e+1o+2e+2o")
    assert kw["two_body_hidden"] == [64, 128, 256] and kw["latent_hidden"] == []
    assert c.model.builtin_norm is True and c.molecules.target_norm is True
    assert (c.molecules.dataset, c.molecules.energy_unit, c.molecules.train) == (
        "md17-dft", "eV", 130)
    assert (c.train.batch_size, c.optimizer.lr, c.train.epochs) == (5, 2e-3, a["epochs"])
    # the registry resolves the cell's arguments to the md17 size exactly
    from geonorm_jax.models.allegro import ALLEGRO_SPEC

    resolved = ALLEGRO_SPEC.resolve(hidden=c.model.hidden, num_layers=c.model.num_layers,
                                    model_kwargs=c.model.model_kwargs)
    want = ALLEGRO_SPEC.resolve(size="md17")
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}
    assert c.optimizer.schedule == a.get("schedule", "constant")
    assert survey_case_studies.PRESETS["test"]["dft"]["anchor"]["size"] == "tiny"
    other = dict(p, dft=dict(p["dft"], anchor=dict(a, schedule="cosine", size="tiny")))
    c = survey_case_studies.anchor_config(other)
    assert c.optimizer.schedule == "cosine" and c.model.hidden == 8


def test_anchor_model_rejects_an_unknown_size():
    with pytest.raises(ValueError, match=r"expected one of \[.*'md17'.*\]; received 'huge'"):
        survey_anchor.anchor_model("huge")


def test_anchor_table_ratios_and_markdown():
    row = {"energy_mae_meV": {"mean": 6.0, "std": 0.0, "n": 1},
           "force_mae_meV_per_A": {"mean": 27.0, "std": 0.0, "n": 1},
           "epochs": 150, "seeds": 1, "params": 965538, "step_ms": 270.0}
    anchor = {"size": "md17", "epochs": 150, "batch_size": 5, "seeds": [0]}
    t = survey_anchor.anchor_table(row, anchor, 130)
    m = t["metrics"]
    pub = survey_anchor.PUBLISHED_URACIL
    assert m["energy_mae_meV"]["ratio"] == pytest.approx(6.0 / pub["energy_mae_meV"])
    assert m["force_mae_meV_per_A"]["ratio"] == pytest.approx(27.0 / pub["force_mae_meV_per_A"])
    assert t["train_frames"] == 130 and len(t["gap_causes"]) == len(survey_anchor.GAP_CAUSES)
    text = "\n".join(survey_anchor.anchor_markdown(t))
    assert "| energy MAE (meV) | 6 | 0.6 | 10 |" in text
    assert "| force MAE (meV/Å) | 27 | 1.8 | 15 |" in text
    assert "Nat. Commun. 14, 579 (2023), Table 2" in text and "130 training frames" in text
    assert survey_anchor.anchor_markdown(None) == []
    # a seed that did not finish: no ratio, rendered as n/a
    t = survey_anchor.anchor_table({"energy_mae_meV": {"mean": None}}, anchor, 130)
    assert t["metrics"]["energy_mae_meV"]["ratio"] is None
    assert "| energy MAE (meV) | n/a | 0.6 | n/a |" in survey_anchor.anchor_markdown(t)


@pytest.mark.parametrize("start, end, status", [
    (11.0, 5.0, "reproduced"), (9.1, 3.2, "reproduced"), (5.6, 5.6, "partially reproduced"),
    (0.5, 5.0, "not reproduced"), (None, 5.0, "not tested"), (3.0, None, "not tested")])
def test_gap_status_thresholds(start, end, status):
    assert survey_dft.gap_status(start, end, survey_case_studies.SURVEY_CLAIMS) == status
