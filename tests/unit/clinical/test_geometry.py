"""Apex, mitral annulus and method-of-discs volumes on analytic shapes, and the agreement statistics on
hand-computable pairs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.clinical_fixtures import apex_of, half_ellipse, half_ellipsoid_volume, with_island
from nnunetv2_msvmamba.clinical.agreement import agreement
from nnunetv2_msvmamba.clinical.geometry import DEFAULT_DISCS, GeometryError, measure_view
from nnunetv2_msvmamba.clinical.volumes import biplane_volume, ejection_fraction, single_plane_volume

SPACING = (0.3, 0.45)          # anisotropic (row, column) mm, so swapped axes would show
SHAPE = (260, 180)
BASE = (39.0, 40.5)            # annulus midpoint, mm
ED_AXES = (30.3, 9.7, 11.2)    # length, 2CH half-width, 4CH half-width (mm)
ES_FACTORS = (0.85, 0.8, 0.8)
ANGLES = np.linspace(0.0, 2 * math.pi, 12, endpoint=False) + 0.1


def views(length: float, half_2ch: float, half_4ch: float, angle: float, atrium: bool):
    """Measured 2CH and 4CH views of one phase; the 4CH is 3 % shorter, so the longer length is the 2CH's."""
    two = half_ellipse(SHAPE, BASE, length, half_2ch, angle, SPACING, atrium, wall=2.0 if atrium else 0.0)
    four = half_ellipse(SHAPE, BASE, 0.97 * length, half_4ch, angle, SPACING, atrium)
    return measure_view(two, SPACING), measure_view(four, SPACING)


def closed_form(length: float, half_2ch: float, half_4ch: float) -> float:
    return half_ellipsoid_volume(length, half_2ch, half_4ch)


@pytest.mark.parametrize("atrium", [True, False], ids=["annulus-from-atrium", "annulus-from-hull"])
def test_apex_and_annulus_are_found_at_any_angle(atrium):
    length, half_width, _ = ED_AXES
    for angle in ANGLES:
        labels = half_ellipse(SHAPE, BASE, length, half_width, angle, SPACING, atrium)
        axis = measure_view(labels, SPACING).axis
        # The tip of the ellipse is blunt (radius of curvature a²/L ~ 3 mm), so the farthest pixel may sit
        # a pixel or two to its side; the annulus is a straight border, found to within a pixel.
        assert np.linalg.norm(axis.apex - apex_of(BASE, length, angle)) < 1.5, angle
        assert np.linalg.norm(axis.annulus_midpoint - np.array(BASE)) < 0.5, angle
        assert axis.length == pytest.approx(length, abs=0.6)
        assert axis.annulus_diameter == pytest.approx(2 * half_width, abs=1.5)


@pytest.mark.parametrize("atrium", [True, False], ids=["annulus-from-atrium", "annulus-from-hull"])
def test_biplane_volumes_and_ef_of_half_ellipsoids_match_the_closed_form_at_any_angle(atrium):
    es_axes = tuple(a * f for a, f in zip(ED_AXES, ES_FACTORS))
    expected_ef = ejection_fraction(closed_form(*ED_AXES), closed_form(*es_axes))
    volumes = []
    for angle in ANGLES:
        edv = biplane_volume(*views(*ED_AXES, angle, atrium))
        esv = biplane_volume(*views(*es_axes, angle, atrium))
        assert edv == pytest.approx(closed_form(*ED_AXES), rel=0.03), angle
        assert esv == pytest.approx(closed_form(*es_axes), rel=0.03), angle
        assert abs(ejection_fraction(edv, esv) - expected_ef) < 2.0, angle
        volumes.append((edv, esv))
    # Rotation invariance: the same shape gives the same volumes whatever its angle in the image.
    volumes = np.array(volumes)
    assert np.ptp(volumes, axis=0).max() / volumes.mean(axis=0).min() < 0.03


def test_single_plane_volume_of_a_half_ellipse_is_that_of_the_half_spheroid():
    length, half_width = 30.3, 10.4
    labels = half_ellipse(SHAPE, BASE, length, half_width, 0.7, SPACING, atrium=False)
    view = measure_view(labels, SPACING)
    assert len(view.diameters) == DEFAULT_DISCS
    assert single_plane_volume(view) == pytest.approx(half_ellipsoid_volume(length, half_width, half_width), rel=0.03)
    # The discs use every cavity pixel once: their areas add up to the cavity area.
    assert np.sum(view.diameters) * view.length / DEFAULT_DISCS == pytest.approx(view.area)
    # Diameters shrink from the annulus (disc 0) to the apex.
    assert view.diameters[0] > view.diameters[10] > view.diameters[-1]


def test_biplane_uses_the_longer_length_and_equals_single_plane_for_identical_views():
    labels = half_ellipse(SHAPE, BASE, 30.3, 10.4, 0.3, SPACING)
    view = measure_view(labels, SPACING)
    assert biplane_volume(view, view) == pytest.approx(single_plane_volume(view))
    shorter = measure_view(half_ellipse(SHAPE, BASE, 20.0, 10.4, 0.3, SPACING), SPACING)
    assert biplane_volume(view, shorter) == pytest.approx(
        math.pi / 4 * np.sum(view.diameters * shorter.diameters) * view.length / DEFAULT_DISCS)


def test_volume_scales_with_the_cube_of_the_spacing():
    labels = half_ellipse((120, 100), (100.0, 50.0), 60.3, 20.2, 0.0)
    in_pixels = single_plane_volume(measure_view(labels, (1.0, 1.0)))
    assert single_plane_volume(measure_view(labels, (0.5, 0.5))) == pytest.approx(in_pixels * 0.125)


def test_a_mask_without_cavity_is_a_geometry_error():
    with pytest.raises(GeometryError, match="no LV cavity"):
        measure_view(np.zeros((50, 50), np.uint8), (1.0, 1.0))
    tiny = np.zeros((50, 50), np.uint8)
    tiny[10, 10] = 1
    with pytest.raises(GeometryError, match="too small"):
        measure_view(tiny, (1.0, 1.0))


def test_ejection_fraction():
    assert ejection_fraction(100.0, 40.0) == pytest.approx(60.0)
    assert math.isnan(ejection_fraction(0.0, 0.0))


def test_agreement_statistics_on_hand_computable_pairs():
    measured, reference = [12.0, 20.0, 31.0, 39.0], [10.0, 20.0, 30.0, 40.0]
    # differences 2, 0, 1, -1: mean 0.5, sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    stats = agreement(measured, reference)
    assert stats["n"] == 4
    assert stats["bias"] == pytest.approx(0.5)
    assert stats["sd_difference"] == pytest.approx(math.sqrt(5 / 3))
    assert stats["loa_lower"] == pytest.approx(0.5 - 1.96 * math.sqrt(5 / 3))
    assert stats["loa_upper"] == pytest.approx(0.5 + 1.96 * math.sqrt(5 / 3))
    assert stats["mae"] == pytest.approx(1.0)
    assert stats["pearson_r"] == pytest.approx(np.corrcoef(measured, reference)[0, 1])
    assert agreement([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])["pearson_r"] == pytest.approx(1.0)
    assert agreement([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])["pearson_r"] == pytest.approx(-1.0)


def test_agreement_leaves_out_undefined_pairs_and_says_what_is_undefined():
    stats = agreement([1.0, math.nan, 5.0], [2.0, 3.0, math.nan])
    assert stats["n"] == 1 and stats["bias"] == pytest.approx(-1.0) and stats["mae"] == pytest.approx(1.0)
    assert math.isnan(stats["sd_difference"]) and math.isnan(stats["pearson_r"])
    assert agreement([], [])["n"] == 0
    assert math.isnan(agreement([1.0, 1.0], [1.0, 2.0])["pearson_r"])  # no variation: r undefined


def test_a_stray_blob_of_atrium_touching_the_wall_does_not_move_the_annulus():
    length, half_width = 30.3, 10.4
    labels = half_ellipse(SHAPE, BASE, length, half_width, 0.0, SPACING, atrium=False)
    clean = measure_view(labels, SPACING)
    row = int(round((BASE[0] - 0.5 * length) / SPACING[0]))
    column = int(round((BASE[1] + half_width * math.sqrt(0.75)) / SPACING[1]))  # the wall at mid-cavity
    blob = labels[row - 3:row + 3, column - 1:column + 4]  # a few atrium pixels against the wall, mid-cavity
    blob[blob == 0] = 3
    assert (blob == 1).any() and (blob == 3).any()
    with_blob = measure_view(labels, SPACING)
    assert np.linalg.norm(with_blob.axis.annulus_midpoint - clean.axis.annulus_midpoint) < 0.5
    assert single_plane_volume(with_blob) == pytest.approx(single_plane_volume(clean), rel=0.01)


@pytest.mark.parametrize("atrium", [True, False], ids=["annulus-from-atrium", "annulus-from-hull"])
def test_a_stray_island_of_cavity_far_from_the_ventricle_is_left_out_and_reported(atrium):
    """An island below the atrium would otherwise be the farthest cavity point from the annulus (the 'apex')."""
    labels = half_ellipse(SHAPE, BASE, 30.3, 10.4, 0.0, SPACING, atrium)
    clean = measure_view(labels, SPACING)
    island = with_island(labels, 1, (SHAPE[0] - 12, SHAPE[1] // 2), 5)
    measured = measure_view(island, SPACING)
    assert measured.area == clean.area and measured.length == clean.length
    np.testing.assert_array_equal(measured.diameters, clean.diameters)
    assert single_plane_volume(measured) == single_plane_volume(clean)
    [removed] = measured.removed
    cavity_pixels = int(np.count_nonzero(labels == 1))
    assert (removed.structure, removed.islands, removed.pixels) == ("LV cavity (label 1)", 1, 25)
    assert removed.percent == pytest.approx(100 * 25 / (cavity_pixels + 25))
    assert removed.describe() == (f"1 island(s) of LV cavity (label 1) removed (25 pixels, {removed.percent:.1f} % "
                                  f"of it)")
    assert clean.removed == ()


def test_an_island_of_atrium_is_left_out_of_the_annulus_and_reported():
    labels = half_ellipse(SHAPE, BASE, 30.3, 10.4, 0.0, SPACING, atrium=True)
    clean = measure_view(labels, SPACING)
    # Two islands of atrium against the cavity's walls half way up: a valve plane there would halve the cavity.
    row = int(round((BASE[0] - 0.5 * 30.3) / SPACING[0]))
    island = labels.copy()
    for side in (-1, 1):
        column = int(round((BASE[1] + side * 10.4 * math.sqrt(0.75)) / SPACING[1]))
        block = island[row - 1:row + 2, column - 2:column + 3]
        block[block == 0] = 3
        assert (block == 1).any() and (block == 3).any()
    measured = measure_view(island, SPACING)
    assert np.linalg.norm(measured.axis.annulus_midpoint - clean.axis.annulus_midpoint) < 1e-9
    assert single_plane_volume(measured) == single_plane_volume(clean)
    assert [(r.structure, r.islands) for r in measured.removed] == [("left atrium (label 3)", 2)]


def d_shaped_cavity_on_a_bowed_atrium() -> np.ndarray:
    """A cavity with one straight wall (column 30, rows 20-86), its other wall an ellipse's arc, and a base that
    bows down into the atrium below it: the atrial border is curved, and the hull's straightest stretch is the
    wall, not the valve plane. The apex is the top of the straight wall, (20, 30)."""
    rows, columns = np.mgrid[0:120, 0:120]
    cavity = ((((rows - 55) / 35.0) ** 2 + ((columns - 30) / 40.0) ** 2 <= 1) & (columns >= 30)
              & ((rows - 40) ** 2 + (columns - 50) ** 2 <= 50 ** 2))
    atrium = (~cavity & ((rows - 40) ** 2 + (columns - 50) ** 2 <= 62 ** 2) & (rows > 70)
              & (columns >= 30) & (columns <= 70))
    labels = np.zeros(rows.shape, np.uint8)
    labels[cavity], labels[atrium] = 1, 3
    return labels


def test_the_atrial_border_decides_the_annulus_where_the_hull_would_take_a_straight_wall():
    labels = d_shaped_cavity_on_a_bowed_atrium()
    measured = measure_view(labels, (1.0, 1.0))
    atrium_pixels = np.argwhere(labels == 3)
    for hinge in measured.axis.hinges:  # the ends of the border the cavity shares with the atrium
        assert np.min(np.linalg.norm(atrium_pixels - hinge, axis=1)) <= 1.5, hinge
    assert np.linalg.norm(measured.axis.apex - (20, 30)) <= 1.5
    assert measured.axis.length > 55
    # the premise: without the atrium, the straight wall would be taken for the valve plane
    without_atrium = measure_view(labels, (1.0, 1.0), atrium_label=None)
    assert np.linalg.norm(without_atrium.axis.apex - measured.axis.apex) > 20
