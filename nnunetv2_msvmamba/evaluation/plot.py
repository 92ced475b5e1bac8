"""`boxplot.png`: per-case Dice and HD95 per structure (columns) and model (boxes), all cases."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .structures import Structure

# (metric column, axis label, factor from the CSV value to the plotted one)
PLOTTED_METRICS = (("dice", "Dice (%)", 100.0), ("hd95_mm", "HD95 (mm)", 1.0))


def write_boxplot(rows: Sequence[dict], models: Sequence[str], structures: Sequence[Structure], path: Path) -> None:
    """Draws one box per model for each structure and metric, with the individual cases as dots (few cases
    are common in echo test sets, and a box alone hides them). Cases with undefined HD95 are left out."""
    figure = Figure(figsize=(max(3.0 * len(structures), 4.0) + 0.4 * len(models), 6.5), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg whatever backend the process has chosen
    axes = figure.subplots(len(PLOTTED_METRICS), len(structures), squeeze=False)
    jitter = np.random.default_rng(0)
    for column, structure in enumerate(structures):
        for row, (metric, label, factor) in enumerate(PLOTTED_METRICS):
            ax = axes[row][column]
            values = [[r[metric] * factor for r in rows if r["model"] == model and r["structure"] == structure.name
                       and math.isfinite(r[metric])] for model in models]
            ax.boxplot(values, tick_labels=list(models), showfliers=False, widths=0.6)
            for position, model_values in enumerate(values, start=1):
                ax.scatter(position + jitter.uniform(-0.15, 0.15, len(model_values)), model_values,
                           s=10, alpha=0.6, color="tab:blue", zorder=3)
                if not model_values:  # every case had exactly one empty mask: say so rather than leave a gap
                    ax.text(position, 0.5, "undefined", transform=ax.get_xaxis_transform(), ha="center",
                            color="gray")
            ax.grid(axis="y", alpha=0.3)
            ax.tick_params(axis="x", labelrotation=20 if len(models) > 2 else 0)
            if row == 0:
                ax.set_title(structure.name)
            if column == 0:
                ax.set_ylabel(label)
    figure.suptitle("Per-case Dice and HD95, all cases")
    figure.savefig(path, dpi=150)
