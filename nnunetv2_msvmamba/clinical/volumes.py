"""Volumes by the method of discs and the ejection fraction (ASE/EACVI chamber quantification).

Single plane (one apical view, EchoNet-Dynamic): V = pi/4 * sum(d_i^2) * L / n, with the disc diameters d_i of
that view and its long-axis length L. Simpson's biplane (apical 2- and 4-chamber views, CAMUS):
V = pi/4 * sum(a_i * b_i) * L / n, with the diameters a_i (2CH) and b_i (4CH) of disc i, each view cut into
n discs along its own long axis, and L the longer of the two lengths."""
from __future__ import annotations

import math

import numpy as np

from .geometry import ViewMeasurement

MM3_PER_ML = 1000.0
IMPLAUSIBLE_CAUSES = "ED and ES swapped, or a failed segmentation"
IMPLAUSIBLE = f"ESV > EDV, physiologically implausible ({IMPLAUSIBLE_CAUSES})"
IMPLAUSIBLE_FLAG = "ESV > EDV: physiologically implausible"  # beside a number that includes such a beat


def implausible_beats_flag(count: int) -> str:
    """What stands beside a loop's EF that includes `count` beats with ESV > EDV."""
    return f"{count} beat(s) with {IMPLAUSIBLE_FLAG}"


def single_plane_volume(view: ViewMeasurement) -> float:
    """Volume of one view by the method of discs, in (spacing unit)³."""
    return float(math.pi / 4.0 * np.sum(view.diameters ** 2) * view.length / len(view.diameters))


def biplane_volume(two_chamber: ViewMeasurement, four_chamber: ViewMeasurement) -> float:
    """Simpson's biplane volume of the 2CH and 4CH views, in (spacing unit)³."""
    length = max(two_chamber.length, four_chamber.length)
    return float(math.pi / 4.0 * np.sum(two_chamber.diameters * four_chamber.diameters) * length
                 / len(two_chamber.diameters))


def ejection_fraction(end_diastolic: float, end_systolic: float) -> float:
    """EF in percent, (EDV - ESV) / EDV; NaN when EDV is not positive."""
    if not end_diastolic > 0:
        return math.nan
    return 100.0 * (end_diastolic - end_systolic) / end_diastolic


def is_implausible(end_diastolic: float, end_systolic: float) -> bool:
    """ESV larger than EDV (a negative EF): no ventricle fills during systole, so the ED and ES frames are
    swapped or one of them is badly segmented."""
    return bool(math.isfinite(end_diastolic) and math.isfinite(end_systolic) and end_systolic > end_diastolic)
