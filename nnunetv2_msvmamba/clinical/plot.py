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
