"""The clinical plots, drawn with Agg whatever backend the process has chosen: a sequence's volume curve with
its ED/ES frames, and Bland-Altman and scatter plots of model against reference."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .sequence import SequenceAnalysis

DPI = 110
# Each agreement panel's size, and the room left for the figure's margins.
PANEL_WIDTH_IN, PANEL_HEIGHT_IN, TITLE_SPACE_IN = 3.4, 3.0, 0.4


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_volume_curve(analysis: "SequenceAnalysis", path: Path) -> None:
    """LV volume per frame, ED frames marked ▲ and ES frames ▼, with the EF of each beat."""
    figure = new_figure(7.0, 3.6)
    ax = figure.subplots()
    frames = np.arange(len(analysis.lv_volume))
    ax.plot(frames, analysis.lv_volume, color="tab:blue", marker=".", lw=1.2, label="LV volume")
    for phase, marker, color in (("ED", "^", "tab:red"), ("ES", "v", "tab:green")):
        marked = [f for f, p in enumerate(analysis.phases) if p == phase]
        ax.scatter(marked, analysis.lv_volume[marked], marker=marker, s=60, color=color, zorder=3, label=phase)
    counted = analysis.beats_in_ef
    for beat in analysis.beats:
        ax.annotate(f"EF {beat.ef_percent:.1f}%" + (" (ESV > EDV)" if beat.implausible else "")
                    + ("" if beat in counted else " (left out)"),
                    (0.5 * (beat.ed_frame + beat.es_frame), 0.5 * (beat.edv + beat.esv)),
                    ha="center", fontsize=8, color="dimgray")
    ax.set_title(f"{analysis.name}: {analysis.ef_text}", fontsize=10)
    ax.set_xlabel("frame (0-based)")
    ax.set_ylabel(f"LV volume ({analysis.volume_unit}, single plane)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    figure.savefig(path, dpi=DPI)


def panel_grid(n_panels: int, max_columns: int) -> tuple[int, int]:
    """(rows, columns) for `n_panels`: as few rows as `max_columns` allows, then as few columns as those rows
    need (4 panels, at most 3 a row: 2 x 2). Fewer cells than rows stay empty, at the end of the last row."""
    columns = max(1, min(n_panels, max_columns))
    rows = max(1, math.ceil(n_panels / columns))
    return rows, max(1, math.ceil(n_panels / rows))


def agreement_panels(comparisons: Sequence[dict], metrics: Sequence[tuple[str, str]]) -> list[tuple[dict, str, str]]:
    """(comparison, metric, label) of every panel that has pairs, comparison by comparison: quantities without
    pairs (CAMUS's cases.csv has an EF but no volumes) get no panel, rather than an empty cell."""
    return [(comparison, metric, label) for comparison in comparisons for metric, label in metrics
            if comparison["stats"][metric]["n"] > 0]


def draw_points(ax, x: np.ndarray, y: np.ndarray, comparison: dict, metric: str) -> None:
    """The pairs as points; those the comparison flags (`flagged`: metric -> boolean array, named by `flag_label`;
    an EF with a beat whose ESV > EDV) as red crosses with a legend, so that they are not read as any other."""
    flagged = np.asarray(comparison.get("flagged", {}).get(metric, np.zeros(len(x), dtype=bool)), dtype=bool)
    ax.scatter(x[~flagged], y[~flagged], s=14, alpha=0.7)
    if flagged.any():
        ax.scatter(x[flagged], y[flagged], s=36, marker="x", color="tab:red", label=comparison["flag_label"])
        ax.legend(fontsize=7, loc="lower right")


def draw_bland_altman(ax, comparison: dict, metric: str, label: str) -> None:
    measured, reference = comparison["pairs"][metric]
    stats = comparison["stats"][metric]
    draw_points(ax, 0.5 * (measured + reference), measured - reference, comparison, metric)
    for value, style in ((stats["bias"], "-"), (stats["loa_lower"], "--"), (stats["loa_upper"], "--")):
        if math.isfinite(value):
            ax.axhline(value, color="tab:red", ls=style, lw=1)
    ax.set_xlabel(f"mean of both ({label})", fontsize=8)
    ax.set_ylabel(f"{comparison['model']} - {comparison['reference']}", fontsize=8)
    # 3 significant digits: volumes are tens to hundreds of mL, EF tens of percent, biases can be fractions
    ax.text(0.02, 0.97, f"bias {stats['bias']:.3g}, LoA ±{1.96 * stats['sd_difference']:.3g}"
            if math.isfinite(stats["sd_difference"]) else f"bias {stats['bias']:.3g}",
            transform=ax.transAxes, va="top", fontsize=8)


def draw_scatter(ax, comparison: dict, metric: str, label: str) -> None:
    measured, reference = comparison["pairs"][metric]
    draw_points(ax, reference, measured, comparison, metric)
    low = float(min(measured.min(), reference.min()))
    high = float(max(measured.max(), reference.max()))
    ax.plot([low, high], [low, high], color="gray", lw=1, ls="--")
    ax.set_xlabel(f"{comparison['reference']} ({label})", fontsize=8)
    ax.set_ylabel(f"{comparison['model']}", fontsize=8)
    r = comparison["stats"][metric]["pearson_r"]
    ax.text(0.02, 0.97, f"r = {r:.3f}" if math.isfinite(r) else "r n/a", transform=ax.transAxes, va="top",
            fontsize=8)


def agreement_grid(comparisons: Sequence[dict], metrics: Sequence[tuple[str, str]], path: Path, bland_altman: bool
                   ) -> Figure:
    """One panel per comparison and metric that has pairs, in reading order on a compact grid of at most
    len(metrics) columns (panel_grid), saved to `path`. `comparisons` items: {model, reference, pairs: metric ->
    (measured, reference) arrays, stats: metric -> agreement dict, and optionally flagged and flag_label (see
    draw_points)}; `metrics` (key, label)."""
    panels = agreement_panels(comparisons, metrics)
    rows, columns = panel_grid(len(panels), len(metrics))
    figure = new_figure(PANEL_WIDTH_IN * columns, PANEL_HEIGHT_IN * rows + TITLE_SPACE_IN)
    draw = draw_bland_altman if bland_altman else draw_scatter
    for index, (comparison, metric, label) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{comparison['model']} vs {comparison['reference']}: {label}", fontsize=9)
        draw(ax, comparison, metric, label)
    if not panels:
        figure.text(0.5, 0.5, "no pairs to compare", ha="center", va="center")
    figure.savefig(path, dpi=DPI)
    return figure
