"""The agreement figures' layout: one panel per comparison and quantity that has pairs, packed into a grid
without empty cells (CAMUS's cases.csv gives an EF but no volumes, so most comparisons have one panel)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from nnunetv2_msvmamba.clinical import plot
from nnunetv2_msvmamba.clinical.agreement import agreement
from nnunetv2_msvmamba.clinical.report import METRICS

VOLUMES_AND_EF = ("edv", "esv", "ef")
EF_ONLY = ("ef",)


def comparison(model: str, reference: str, metrics_with_pairs: tuple[str, ...]) -> dict:
    """A comparison as clinical.report builds it; the quantities not in `metrics_with_pairs` have no pairs."""
    rng = np.random.default_rng(len(model) + len(reference))
    pairs = {}
    for metric, _ in METRICS:
        if metric in metrics_with_pairs:
            reference_values = rng.uniform(40.0, 150.0, 6)
            pairs[metric] = (reference_values + rng.normal(0.0, 5.0, 6), reference_values)
        else:
            pairs[metric] = (np.array([]), np.array([]))
    return {"model": model, "reference": reference, "pairs": pairs,
            "stats": {metric: agreement(*pairs[metric]) for metric in pairs}}


def saved_grid(path: Path, comparisons: list[dict], bland_altman: bool) -> tuple[int, int]:
    """(rows, columns) of panels in the saved figure, from its size in pixels."""
    plot.agreement_grid(comparisons, METRICS, path, bland_altman=bland_altman)
    height, width = matplotlib.image.imread(path).shape[:2]
    columns = round(width / (plot.PANEL_WIDTH_IN * plot.DPI))
    rows = round((height / plot.DPI - plot.TITLE_SPACE_IN) / plot.PANEL_HEIGHT_IN)
    assert (width, height) == (round(columns * plot.PANEL_WIDTH_IN * plot.DPI),
                               round((rows * plot.PANEL_HEIGHT_IN + plot.TITLE_SPACE_IN) * plot.DPI))
    return rows, columns


@pytest.mark.parametrize("bland_altman", [True, False], ids=["bland_altman", "scatter"])
@pytest.mark.parametrize("metrics_per_comparison, grid", [
    # CAMUS ground truth against cases.csv: the EF only, one panel (not one of three columns)
    ([EF_ONLY], (1, 1)),
    # the demo: two models against the ground truth (EDV, ESV, EF), both and the ground truth against the Info EF
    ([VOLUMES_AND_EF, VOLUMES_AND_EF, EF_ONLY, EF_ONLY, EF_ONLY], (3, 3)),
    # EchoNet-Dynamic in mL: every comparison has every panel, one row each
    ([VOLUMES_AND_EF, VOLUMES_AND_EF], (2, 3)),
    # two EF-only comparisons side by side
    ([EF_ONLY, EF_ONLY], (1, 2)),
    # a model against the ground truth and against the Info EF: four panels, two by two
    ([VOLUMES_AND_EF, EF_ONLY], (2, 2)),
], ids=["camus-reference", "demo", "all-panels", "two-ef-only", "model-and-info"])
def test_the_panels_that_exist_fill_a_compact_grid(tmp_path: Path, metrics_per_comparison, grid, bland_altman):
    comparisons = [comparison(f"model{index}", "reference", metrics)
                   for index, metrics in enumerate(metrics_per_comparison)]
    assert saved_grid(tmp_path / "figure.png", comparisons, bland_altman) == grid


def test_the_figure_holds_one_visible_panel_per_comparison_and_quantity_with_pairs(tmp_path: Path):
    comparisons = [comparison("MSV-Mamba", "reference", VOLUMES_AND_EF), comparison("MSV-Mamba", "cases.csv", EF_ONLY),
                   comparison("reference", "cases.csv", EF_ONLY)]
    figure = plot.agreement_grid(comparisons, METRICS, tmp_path / "bland_altman.png", bland_altman=True)
    assert all(ax.get_visible() for ax in figure.axes)
    assert [ax.get_title() for ax in figure.axes] == [
        "MSV-Mamba vs reference: EDV", "MSV-Mamba vs reference: ESV", "MSV-Mamba vs reference: EF",
        "MSV-Mamba vs cases.csv: EF", "reference vs cases.csv: EF"]
    # five panels: two rows of three, the last cell left out rather than drawn empty
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in figure.axes] == [(2, 3)] * 5


@pytest.mark.parametrize("n_panels, grid", [(0, (1, 1)), (1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)),
                                            (5, (2, 3)), (6, (2, 3)), (7, (3, 3)), (9, (3, 3)), (15, (5, 3))])
def test_panel_grid_uses_as_few_rows_as_the_columns_allow_and_balances_them(n_panels, grid):
    assert plot.panel_grid(n_panels, max_columns=3) == grid


@pytest.mark.parametrize("bland_altman", [True, False], ids=["bland_altman", "scatter"])
def test_flagged_pairs_are_drawn_apart_and_named(tmp_path: Path, bland_altman: bool):
    """A loop whose EF has a beat with ESV > EDV was a dot like any other in ef_bland_altman.png."""
    flagged = comparison("predicted", "dataset", EF_ONLY)
    flagged["flagged"] = {"ef": np.array([False, True, False, False, True, False])}
    flagged["flag_label"] = "a beat with ESV > EDV"
    figure = plot.agreement_grid([flagged], [("ef", "EF %")], tmp_path / "figure.png", bland_altman=bland_altman)
    (ax,) = figure.axes
    assert [len(points.get_offsets()) for points in ax.collections] == [4, 2]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["a beat with ESV > EDV"]
    plain = plot.agreement_grid([comparison("predicted", "dataset", EF_ONLY)], [("ef", "EF %")],
                                tmp_path / "plain.png", bland_altman=bland_altman)
    assert [len(points.get_offsets()) for points in plain.axes[0].collections] == [6]
    assert plain.axes[0].get_legend() is None


def test_the_clinical_report_flags_each_pair_with_esv_above_edv_on_either_side():
    """A patient whose ED and ES were swapped (in the model or in the reference) was drawn like any other."""
    from nnunetv2_msvmamba.clinical.cases import PatientVolumes
    from nnunetv2_msvmamba.clinical.report import ClinicalResults, comparison_entry

    def volumes(patient: str, edv: float, esv: float) -> PatientVolumes:
        return PatientVolumes(patient, edv, esv, 100 * (edv - esv) / edv, physical=True)
    model = {"p1": volumes("p1", 100, 40), "p2": volumes("p2", 40, 100), "p3": volumes("p3", 90, 45)}
    reference = {"p1": volumes("p1", 98, 42), "p2": volumes("p2", 95, 41), "p3": volumes("p3", 45, 90)}
    results = ClinicalResults("CAMUS", True, {"model": model, "reference": reference}, {}, [("model", "reference")],
                              [])
    entry = comparison_entry(results, "model", "reference")
    assert {metric: flags.tolist() for metric, flags in entry["flagged"].items()} == {
        metric: [False, True, True] for metric in VOLUMES_AND_EF}
    assert entry["flag_label"] == "ESV > EDV"
