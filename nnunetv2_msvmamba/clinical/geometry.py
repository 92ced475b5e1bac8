"""The LV long axis of one apical view and the cavity's diameters along it (the method of discs).

Everything is measured in physical coordinates: a pixel is the point at its centre, (row, column) times the
spacing of each axis, so anisotropic pixels give the same answer as square ones.

**Mitral annulus.** Its two hinge points (the basal corners of the cavity) come from the LV cavity mask:

- when the label map has a left atrium (CAMUS: label 3), the annulus is the cavity's border shared with the
  atrium (the mitral valve plane lies between the two chambers): the cavity pixels with a 4-neighbour in the
  atrium and the atrium pixels with a 4-neighbour in the cavity, whose middle is the valve plane itself; its
  hinge points are the two ends of that border along its own principal direction (unless that border is
  shorter than half the annulus found as below: then it is a stray blob of atrium touching the cavity in a
  prediction, and is ignored);
- otherwise (EchoNet-Dynamic: the cavity alone, traced wall to wall and closed by a straight segment across the
  valve) the annulus is the straight stretch of the cavity's convex hull (consecutive hull edges within one
  pixel of a common line count as one, since a tilted straight border is pixelated) with the largest product
  of its length, the height of the hull above it (the distance to the farthest hull point) and a weight
  1 - e cos²(angle between the stretch and the cavity's long dimension), e being how elongated the cavity is
  (from the covariance of its pixels: 0 round, towards 1 long and thin). The valve plane is the one long,
  straight stretch of the outline that faces the whole length of the cavity and crosses it squarely; the
  long, nearly straight stretches of the walls face only its width and run along it, and the edges around
  the rounded apex are short.

**Apex.** The cavity point farthest from the midpoint of the annulus; the **long axis** runs from that midpoint
to the apex, and its length L is their distance.

**Islands.** Each structure is measured by its largest connected component (8-connected, as nnU-Net's own
post-processing keeps it): a stray island of cavity far from the ventricle would otherwise become the "apex"
(or a few basal pixels of it the annulus) and move the volumes by several percent. What was removed is reported
with the measurement, so that the user sees which file had islands and how large they were.

**Discs.** The long axis is cut into `n_discs` (ASE/EACVI: 20) slabs of height L / n_discs, perpendicular to it.
A disc's diameter is the cavity area inside its slab divided by the slab height (the mean chord of the slab),
which uses every pixel once, so the discs always add up to the cavity area and do not depend on where a single
chord happens to cross the pixel grid; cavity pixels just beyond either end of the axis count in the end slabs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

DEFAULT_DISCS = 20
MIN_CAVITY_PIXELS = 3
# An atrial border shorter than this fraction of the hull's basal edge is a stray blob, not the valve plane.
MIN_ATRIAL_BORDER_FRACTION = 0.5


class GeometryError(ValueError):
    """The mask has no usable LV cavity (empty, or too small to have a long axis)."""


@dataclass(frozen=True)
class LongAxis:
    """Apex and the two mitral hinge points of one view, (row, column) in mm."""

    apex: np.ndarray
    hinges: tuple[np.ndarray, np.ndarray]

    @property
    def annulus_midpoint(self) -> np.ndarray:
        return 0.5 * (self.hinges[0] + self.hinges[1])

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.apex - self.annulus_midpoint))

    @property
    def annulus_diameter(self) -> float:
        return float(np.linalg.norm(self.hinges[1] - self.hinges[0]))


@dataclass(frozen=True)
class RemovedIslands:
    """The pixels of one structure outside its largest connected component, left out of the measurement."""

    structure: str
    islands: int
    pixels: int
    structure_pixels: int  # the whole structure's, islands included

    @property
    def percent(self) -> float:
        return 100.0 * self.pixels / self.structure_pixels

    def describe(self) -> str:
        return (f"{self.islands} island(s) of {self.structure} removed ({self.pixels} pixels, {self.percent:.1f} % "
                f"of it)")


@dataclass(frozen=True)
class ViewMeasurement:
    """One view's cavity: its area, long axis and disc diameters (mm, mm² or pixel units), measured on the
    largest connected component of each structure; `removed` says which islands were left out."""

    area: float
    axis: LongAxis
    diameters: np.ndarray
    removed: tuple[RemovedIslands, ...] = ()

    @property
    def length(self) -> float:
        return self.axis.length


def bounding_crop(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    """The smallest window holding `mask`'s pixels plus `margin` pixels on every side (within the image)."""
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(columns[0] - margin, 0), columns[-1] + margin + 1))


# 8-connectivity: pixels touching at a corner are one structure (scikit-image's default in nnU-Net's
# remove_all_but_largest_component).
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray, structure: str) -> tuple[np.ndarray, Optional[RemovedIslands]]:
    """`mask` reduced to its largest connected component, and what was removed (None when nothing was)."""
    components, count = ndimage.label(mask, structure=CONNECTIVITY)
    if count <= 1:
        return mask, None
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    total = int(sizes.sum())
    return components == largest, RemovedIslands(structure, count - 1, total - int(sizes[largest - 1]), total)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(b - a))


def touches(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour in `other`."""
    near = np.zeros_like(other)
    near[1:] |= other[:-1]
    near[:-1] |= other[1:]
    near[:, 1:] |= other[:, :-1]
    near[:, :-1] |= other[:, 1:]
    return mask & near


def ends_along_principal_direction(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two extreme points of a point set along its first principal direction."""
    centred = points - points.mean(axis=0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ directions[0]
    return points[int(np.argmin(projection))], points[int(np.argmax(projection))]


def straight_hull_stretches(vertices: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
    """(first, last) vertex indices of the longest runs of consecutive hull vertices that all lie within
    `tolerance` of the chord joining the run's ends: the hull of a straight but pixelated border (a tilted
    valve plane) has several short edges, which together are one straight stretch."""
    n = len(vertices)
    stretches = []
    for first in range(n):
        last = first + 1
        while last + 1 < first + n:
            start, end = vertices[first], vertices[(last + 1) % n]
            chord = end - start
            between = vertices[[(k % n) for k in range(first + 1, last + 1)]] - start
            deviation = np.abs(between[:, 0] * chord[1] - between[:, 1] * chord[0]) / np.linalg.norm(chord)
            if deviation.max() > tolerance:
                break
            last += 1
        stretches.append((first, last % n))
    return stretches


def principal_axis(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit direction of largest spread of `points` and how elongated they are: (l1 - l2) / (l1 + l2) of
    the covariance's eigenvalues, 0 for a round set, towards 1 for a long thin one."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points, rowvar=False))
    elongation = float((eigenvalues[1] - eigenvalues[0]) / max(eigenvalues.sum(), 1e-12))
    return eigenvectors[:, 1], elongation


def basal_hull_edge(points: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The ends of the straight stretch of the convex hull with the largest length x height of the hull above
    it (the distance from the stretch's line to the farthest hull vertex), weighted by how squarely the
    stretch crosses the cavity's long dimension, as the valve plane does."""
    try:
        vertices = points[ConvexHull(points).vertices]
    except QhullError:  # all points on one line: the hull is that segment
        return ends_along_principal_direction(points)
    long_direction, elongation = principal_axis(points)
    best, best_score = (vertices[0], vertices[1]), -1.0
    for first, last in straight_hull_stretches(vertices, tolerance):
        start, end = vertices[first], vertices[last]
        chord = end - start
        length = float(np.linalg.norm(chord))
        offsets = vertices - start
        height = float(np.abs(offsets[:, 0] * chord[1] - offsets[:, 1] * chord[0]).max()) / length
        along_long_dimension = float(np.dot(chord, long_direction) / length) ** 2  # 0: square across it
        score = length * height * (1.0 - elongation * along_long_dimension)
        if score > best_score:
            best, best_score = (start, end), score
    return best


def find_long_axis(cavity: np.ndarray, spacing_rc: tuple[float, float], atrium: np.ndarray | None = None) -> LongAxis:
    """Apex and mitral hinge points of the cavity mask (see the module docstring for how)."""
    if np.count_nonzero(cavity) < MIN_CAVITY_PIXELS:
        raise GeometryError("no LV cavity" if not cavity.any() else "LV cavity too small to measure")
    window = bounding_crop(cavity)
    cavity = cavity[window]
    scale = np.asarray(spacing_rc, dtype=float)
    points = np.argwhere(cavity) * scale
    border = None
    if atrium is not None:
        atrium = atrium[window]
        border = touches(cavity, atrium) | touches(atrium, cavity)  # the two pixel layers either side of the valve
    hinges = basal_hull_edge(points, tolerance=float(scale.max()))
    if border is not None and np.count_nonzero(border) >= 2:
        atrial_hinges = ends_along_principal_direction(np.argwhere(border) * scale)
        if distance(*atrial_hinges) >= MIN_ATRIAL_BORDER_FRACTION * distance(*hinges):
            hinges = atrial_hinges
    midpoint = 0.5 * (hinges[0] + hinges[1])
    apex = points[int(np.argmax(np.sum((points - midpoint) ** 2, axis=1)))]
    offset = np.array([window[0].start, window[1].start]) * scale
    return LongAxis(apex + offset, (hinges[0] + offset, hinges[1] + offset))


def disc_diameters(cavity: np.ndarray, spacing_rc: tuple[float, float], axis: LongAxis,
                   n_discs: int = DEFAULT_DISCS) -> np.ndarray:
    """Diameter of each disc from the annulus (index 0) to the apex: the cavity area in its slab / slab height."""
    scale = np.asarray(spacing_rc, dtype=float)
    points = np.argwhere(cavity) * scale
    direction = (axis.apex - axis.annulus_midpoint) / axis.length
    position = (points - axis.annulus_midpoint) @ direction / axis.length
    slab = np.clip(np.floor(position * n_discs).astype(int), 0, n_discs - 1)
    pixel_area = float(scale[0] * scale[1])
    return np.bincount(slab, minlength=n_discs) * pixel_area / (axis.length / n_discs)


def measure_view(labels: np.ndarray, spacing_rc: tuple[float, float], lv_label: int = 1,
                 atrium_label: int | None = 3, n_discs: int = DEFAULT_DISCS) -> ViewMeasurement:
    """The LV cavity (`lv_label`) of a 2D label map: area, long axis and disc diameters, of the largest connected
    component of the cavity. The atrium label, when the map has it, locates the mitral annulus (its largest
    component too). Raises GeometryError without a usable cavity."""
    cavity = labels == lv_label
    if not cavity.any():
        raise GeometryError(f"no LV cavity (label {lv_label})")
    cavity, cavity_islands = largest_component(cavity, f"LV cavity (label {lv_label})")
    atrium, atrium_islands = None, None
    if atrium_label is not None:
        atrium, atrium_islands = largest_component(labels == atrium_label, f"left atrium (label {atrium_label})")
    axis = find_long_axis(cavity, spacing_rc, atrium)
    if axis.length <= 0:
        raise GeometryError("LV cavity has no long axis")
    area = float(np.count_nonzero(cavity) * spacing_rc[0] * spacing_rc[1])
    removed = tuple(islands for islands in (cavity_islands, atrium_islands) if islands is not None)
    return ViewMeasurement(area, axis, disc_diameters(cavity, spacing_rc, axis, n_discs), removed)
