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
    for beat in analysis.beats:
        ax.annotate(f"EF {beat.ef_percent:.1f}%", (0.5 * (beat.ed_frame + beat.es_frame),
                                                   0.5 * (beat.edv + beat.esv)),
                    ha="center", fontsize=8, color="dimgray")
    ef = "no beat found" if math.isnan(analysis.ef_percent) else f"EF {analysis.ef_percent:.1f}% " \
                                                                  f"(mean of {len(analysis.beats)} beat(s))"
    ax.set_title(f"{analysis.name}: {ef}", fontsize=10)
    ax.set_xlabel("frame (0-based)")
    ax.set_ylabel(f"LV volume ({analysis.volume_unit}, single plane)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    figure.savefig(path, dpi=110)


def agreement_grid(comparisons: Sequence[dict], metrics: Sequence[tuple[str, str]], path: Path, bland_altman: bool
                   ) -> None:
    """One panel per comparison (rows) and metric (columns). `comparisons` items: {model, reference,
    pairs: metric -> (measured, reference) arrays, stats: metric -> agreement dict}; `metrics` (key, label)."""
    figure = new_figure(3.4 * len(metrics), 3.0 * len(comparisons) + 0.4)
    axes = figure.subplots(len(comparisons), len(metrics), squeeze=False)
    for row, comparison in enumerate(comparisons):
        for column, (metric, label) in enumerate(metrics):
            ax = axes[row][column]
            measured, reference = comparison["pairs"][metric]
            stats = comparison["stats"][metric]
            if stats["n"] == 0:  # e.g. CAMUS's cases.csv has an EF but no volumes: leave the panel out
                ax.set_visible(False)
                continue
            ax.grid(alpha=0.3)
            ax.set_title(f"{comparison['model']} vs {comparison['reference']}: {label}", fontsize=9)
            if bland_altman:
                ax.scatter(0.5 * (measured + reference), measured - reference, s=14, alpha=0.7)
                for value, style in ((stats["bias"], "-"), (stats["loa_lower"], "--"), (stats["loa_upper"], "--")):
                    if math.isfinite(value):
                        ax.axhline(value, color="tab:red", ls=style, lw=1)
                ax.set_xlabel(f"mean of both ({label})", fontsize=8)
                ax.set_ylabel(f"{comparison['model']} - {comparison['reference']}", fontsize=8)
                # 3 significant digits: the demo's volumes are hundredths of a mL, real ones tens of mL
                ax.text(0.02, 0.97, f"bias {stats['bias']:.3g}, LoA ±{1.96 * stats['sd_difference']:.3g}"
                        if math.isfinite(stats["sd_difference"]) else f"bias {stats['bias']:.3g}",
                        transform=ax.transAxes, va="top", fontsize=8)
            else:
                ax.scatter(reference, measured, s=14, alpha=0.7)
                low = float(min(measured.min(), reference.min()))
                high = float(max(measured.max(), reference.max()))
                ax.plot([low, high], [low, high], color="gray", lw=1, ls="--")
                ax.set_xlabel(f"{comparison['reference']} ({label})", fontsize=8)
                ax.set_ylabel(f"{comparison['model']}", fontsize=8)
                r = stats["pearson_r"]
                ax.text(0.02, 0.97, f"r = {r:.3f}" if math.isfinite(r) else "r n/a", transform=ax.transAxes,
                        va="top", fontsize=8)
    figure.savefig(path, dpi=110)
