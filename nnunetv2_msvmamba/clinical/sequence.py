"""Label sequences (one apical view over time): per-frame LV area and single-plane volume, ED and ES frames
detected from the volume curve, EF per beat.

**ED/ES detection.** The volume curve is smoothed (a 3-frame median, which removes single-frame outliers such
as one badly segmented frame, then a Gaussian of `smoothing_frames` frames) and its turning points are found
by hysteresis (a zig-zag): a maximum is confirmed once the curve has fallen from it by at least the threshold,
a minimum once it has risen by it; the last extreme reached counts as well. So extrema at the first and last
frames are found (CAMUS half sequences run from ED to ES), and wiggles smaller than the threshold are ignored.
An extreme at the first or last frame whose swing is under 75 % of the median swing between the inner extremes
is dropped: the video starts or stops part way through a phase, so that frame is no ED or ES.
The threshold is `hysteresis` (default 0.4) times the range of the smoothed curve, and never less than
`min_stroke_fraction` (default 5 %) of its median volume, so a flat curve has no beat. ED frames are the
maxima, ES frames the minima; a beat is an ED followed by the next ES, its EDV and ESV are the volumes of the
(unsmoothed) curve at those frames, and the sequence's EF is the mean of its beats' EFs.

**Flags.** The detection runs on the smoothed curve but a beat's volumes are the measured ones, so one badly
segmented ED frame (its neighbours make it the maximum of the smoothed curve) gives a beat whose ESV is larger
than its EDV: the beat is kept as measured and flagged as physiologically implausible. Frames whose structures
had islands (left out of the measurement, see `geometry`) say so in their note.

**Too few frames per beat.** Below about 5 frames per beat the frames miss ED and ES and the smoothed curve's
turning points are not the heart's, yet a beat can look well resolved: such a loop (10 frames or more, the period
of its volume curve's strongest rhythm under MIN_FRAMES_PER_BEAT) has no EF, and its note says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.image_files import PLANE_AXES, check_finite_voxels, check_image_file, check_spacing, \
    refuse_nifti_twins
from nnunetv2_msvmamba.common.tables import write_csv
from .geometry import GeometryError, measure_view
from .outputs import staged_files
from .plot import write_volume_curve
from .volumes import (IMPLAUSIBLE_CAUSES, IMPLAUSIBLE_FLAG, MM3_PER_ML, ejection_fraction, is_implausible,
                      single_plane_volume)

ED, ES = "ED", "ES"
FRAME_COLUMNS = ("sequence", "frame", "lv_area", "lv_volume", "phase", "note")
SUMMARY_COLUMNS = ("sequence", "frames", "beats", "ef_percent", "edv", "esv", "ef_per_beat", "ed_frames",
                   "es_frames", "area_unit", "volume_unit", "note")
SEQUENCE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
DEFAULT_HYSTERESIS = 0.4
DEFAULT_MIN_STROKE_FRACTION = 0.05
DEFAULT_SMOOTHING_FRAMES = 1.0
PARTIAL_END_FRACTION = 0.75
# Below 5 frames per beat a beat's EF was 8-70 points off, and its error shows in nothing the curve's turning
# points tell; 4.75 so that a rhythm of 5 frames, estimated to within 5 %, keeps its EF.
MIN_FRAMES_PER_BEAT = 4.75
RHYTHM_MIN_FRAMES = 10
RHYTHM_SPECTRUM_SIZE = 4096


@dataclass
class Beat:
    """One ED -> ES pair: frames (0-based) and volumes of the unsmoothed curve."""

    ed_frame: int
    es_frame: int
    edv: float
    esv: float
    ef_percent: float
    # the volume goes beyond EDV or ESV between them: the frames do not resolve this beat (see unresolved_beat)
    unresolved: bool = False

    @property
    def implausible(self) -> bool:
        return is_implausible(self.edv, self.esv)

    def describe(self) -> str:
        return f"ED {self.ed_frame} -> ES {self.es_frame}"


@dataclass
class SequenceAnalysis:
    """Per-frame LV area and volume of one label sequence, its ED/ES frames and beats."""

    name: str
    lv_area: np.ndarray     # per frame; mm², or pixels² without spacing
    lv_volume: np.ndarray   # per frame, single-plane method of discs; mL, or pixels³ without spacing
    phases: list[str]       # per frame: "ED", "ES" or ""
    beats: list[Beat]
    ef_percent: float       # mean over beats_in_ef; NaN when there is none
    physical: bool = True   # False: no spacing, units are pixels
    frame_notes: list[str] = field(default_factory=list)  # per frame: islands left out, or ""
    frames_per_beat: float = math.inf  # of the volume curve's rhythm (rhythm_period); inf where not judged

    @property
    def too_few_frames_per_beat(self) -> bool:
        return self.frames_per_beat < MIN_FRAMES_PER_BEAT

    @property
    def beats_in_ef(self) -> list[Beat]:
        return beats_in_ef(self.beats, self.frames_per_beat)

    @property
    def implausible_beats(self) -> list[Beat]:
        return [beat for beat in self.beats if beat.implausible]

    @property
    def implausible_beats_in_ef(self) -> int:
        """How many beats of the EF have ESV > EDV: the EF is then not to be trusted (it can even be negative)."""
        return sum(beat.implausible for beat in self.beats_in_ef)

    @property
    def ef_text(self) -> str:
        """The EF as the user reads it: the beats it is the mean of, flagged where one has ESV > EDV."""
        counted = self.beats_in_ef
        if not counted:
            return ("no EF: too few frames per beat" if self.too_few_frames_per_beat and self.beats
                    else "no EF: no beat resolved" if self.beats else "no EF: no beat found")
        flag = f", {self.implausible_beats_in_ef} with {IMPLAUSIBLE_FLAG}" if self.implausible_beats_in_ef else ""
        return f"EF {self.ef_percent:.1f} % (mean of {len(counted)} beat(s){flag})"

    @property
    def note(self) -> str:
        """What the user should know about this sequence's numbers: too few frames per beat, implausible beats,
        frames with islands."""
        notes = [f"the LV volume curve repeats every {self.frames_per_beat:.1f} frames: too few frames per beat to "
                 f"find ED and ES (about {MIN_FRAMES_PER_BEAT:.0f} needed), or a segmentation that flickers from "
                 f"frame to frame; every beat left out of the EF"] if self.too_few_frames_per_beat else []
        notes += [f"beat {beat.describe()}: ESV > EDV (EF {beat.ef_percent:.1f} %), physiologically implausible "
                 f"({IMPLAUSIBLE_CAUSES})" for beat in self.implausible_beats]
        notes += [f"beat {beat.describe()}: the volume swings beyond its ED and ES volumes in between (too few frames "
                  f"per beat, or badly segmented frames): left out of the EF" for beat in self.beats if beat.unresolved]
        islands = [str(frame) for frame, note in enumerate(self.frame_notes) if note]
        if islands:
            notes.append(f"islands left out of the measurement in frame(s) {' '.join(islands)} (see "
                         f"sequence_frames.csv)")
        return "; ".join(notes)

    @property
    def area_unit(self) -> str:
        return "mm2" if self.physical else "pixels2"

    @property
    def volume_unit(self) -> str:
        return "mL" if self.physical else "pixels3"


def smooth_curve(curve: np.ndarray, smoothing_frames: float) -> np.ndarray:
    smoothed = ndimage.median_filter(curve, size=3, mode="nearest") if len(curve) >= 3 else curve.copy()
    if smoothing_frames > 0 and len(curve) >= 3:
        smoothed = ndimage.gaussian_filter1d(smoothed, smoothing_frames, mode="nearest")
    return smoothed


def turning_points(curve: np.ndarray, threshold: float) -> list[tuple[int, str]]:
    """Alternating maxima (ED) and minima (ES) of `curve` by hysteresis, first and last frames included."""
    extremes: list[tuple[int, str]] = []
    high = low = candidate = 0
    direction = 0  # +1 climbing towards a maximum, -1 falling towards a minimum, 0 not yet known
    for frame in range(1, len(curve)):
        value = curve[frame]
        if direction == 0:
            if value - curve[low] >= threshold:
                extremes.append((low, ES))
                direction, candidate = 1, frame
            elif curve[high] - value >= threshold:
                extremes.append((high, ED))
                direction, candidate = -1, frame
            else:
                high = frame if value > curve[high] else high
                low = frame if value < curve[low] else low
        elif direction * (value - curve[candidate]) > 0:
            candidate = frame
        elif direction * (curve[candidate] - value) >= threshold:
            extremes.append((candidate, ED if direction > 0 else ES))
            direction, candidate = -direction, frame
    if direction != 0:
        extremes.append((candidate, ED if direction > 0 else ES))
    return extremes


def without_partial_ends(extremes: list[tuple[int, str]], curve: np.ndarray) -> list[tuple[int, str]]:
    """Drops an extreme at the first or last frame whose swing (to its neighbouring extreme) is less than
    PARTIAL_END_FRACTION of the median swing between the other extremes: a video that starts or stops part
    way through systole or diastole. With no swing between two inner extremes to compare with (a half
    sequence, ED first and ES last), the ends are kept."""
    last_frame = len(curve) - 1
    at_end = [frame in (0, last_frame) for frame, _ in extremes]
    swings = [abs(curve[a] - curve[b]) for (a, _), (b, _) in zip(extremes, extremes[1:])]
    inner = [swing for k, swing in enumerate(swings) if not at_end[k] and not at_end[k + 1]]
    if not inner:
        return extremes
    typical = float(np.median(inner))
    kept = []
    for k, extreme in enumerate(extremes):
        if at_end[k]:
            swing = swings[k] if k == 0 else swings[k - 1]
            if swing < PARTIAL_END_FRACTION * typical:
                continue
        kept.append(extreme)
    return kept


def detect_beats(volumes: np.ndarray, hysteresis: float = DEFAULT_HYSTERESIS,
                 min_stroke_fraction: float = DEFAULT_MIN_STROKE_FRACTION,
                 smoothing_frames: float = DEFAULT_SMOOTHING_FRAMES) -> tuple[list[str], list[Beat]]:
    """Per-frame phases ('ED', 'ES' or '') and the ED -> ES beats of a volume curve."""
    smoothed = smooth_curve(np.asarray(volumes, dtype=float), smoothing_frames)
    span = float(smoothed.max() - smoothed.min()) if len(smoothed) else 0.0
    threshold = max(hysteresis * span, min_stroke_fraction * float(np.median(smoothed)) if len(smoothed) else 0.0)
    phases = [""] * len(volumes)
    if threshold <= 0:
        return phases, []
    extremes = without_partial_ends(turning_points(smoothed, threshold), smoothed)
    for frame, phase in extremes:
        phases[frame] = phase
    volumes = np.asarray(volumes, dtype=float)
    beats = [Beat(ed, es, float(volumes[ed]), float(volumes[es]),
                  float(ejection_fraction(float(volumes[ed]), float(volumes[es]))),
                  unresolved_beat(volumes, ed, es, threshold))
             for (ed, first), (es, second) in zip(extremes, extremes[1:]) if first == ED and second == ES]
    return phases, beats


def rhythm_period(volumes: np.ndarray) -> float:
    """The period, in frames, of the volume curve's strongest rhythm: the peak of its windowed spectrum, zero-padded
    so that the peak falls between frequency bins as it should (within ~5 % of a sampled beat's period from 2.5 to
    40 frames, 1 % noise). inf for a curve shorter than RHYTHM_MIN_FRAMES (a half sequence from ED to ES would
    read as a beat of about its own length) or with no variation."""
    curve = np.asarray(volumes, dtype=float)
    curve = curve - curve.mean()
    if len(curve) < RHYTHM_MIN_FRAMES or not np.any(curve):
        return math.inf
    padded = max(RHYTHM_SPECTRUM_SIZE, 16 * len(curve))
    spectrum = np.abs(np.fft.rfft(curve * np.hanning(len(curve)), padded))
    peak = int(np.argmax(spectrum[1:])) + 1  # past the constant term
    return 1.0 / float(np.fft.rfftfreq(padded)[peak])


def beats_in_ef(beats: Sequence[Beat], frames_per_beat: float) -> list[Beat]:
    """The beats the EF is the mean of: none at fewer than MIN_FRAMES_PER_BEAT (the frames miss ED and ES, and the
    curve's turning points are not the heart's), else those the frames resolve."""
    if frames_per_beat < MIN_FRAMES_PER_BEAT:
        return []
    return [beat for beat in beats if not beat.unresolved]


def unresolved_beat(volumes: np.ndarray, ed: int, es: int, threshold: float) -> bool:
    """True when at least two frames between ED and ES lie above EDV or below ESV by more than the detection
    threshold: the smoothed curve's turning points are then not the heart's (a loop sampled at 3-4 frames per
    beat gives "beats" from one ED to the next, EF 0, or across several beats), and the beat's EF cannot be
    trusted. One such frame is a badly segmented frame, which the smoothing is there to ride out. A beat with
    ESV > EDV is flagged as implausible instead (Beat.implausible)."""
    if is_implausible(float(volumes[ed]), float(volumes[es])):
        return False
    between = volumes[ed + 1:es]
    beyond = (between > volumes[ed] + threshold) | (between < volumes[es] - threshold)
    return int(np.count_nonzero(beyond)) >= 2


def analyse_label_sequence(labels: np.ndarray, spacing_rc: Optional[tuple[float, float]], name: str,
                           lv_label: int = 1, atrium_label: Optional[int] = 3, source: Optional[Path] = None,
                           hysteresis: float = DEFAULT_HYSTERESIS,
                           min_stroke_fraction: float = DEFAULT_MIN_STROKE_FRACTION,
                           smoothing_frames: float = DEFAULT_SMOOTHING_FRAMES) -> SequenceAnalysis:
    """Analyses a (frames, rows, columns) label sequence. `spacing_rc` is the (row, column) pixel spacing in mm,
    or None for pixel units. A frame without a usable LV cavity raises InputError naming `source` (default:
    `name`), the sequence and the frame."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(source or name, f"sequence {name}: expected (frames, rows, columns) labels, got shape "
                                         f"{labels.shape}")
    spacing = tuple(float(s) for s in spacing_rc) if spacing_rc is not None else (1.0, 1.0)
    areas, volumes = np.zeros(len(labels)), np.zeros(len(labels))
    frame_notes = []
    for frame, frame_labels in enumerate(labels):
        try:
            view = measure_view(frame_labels, spacing, lv_label, atrium_label)
        except GeometryError as error:
            raise InputError(source or name, f"sequence {name}: frame {frame} (0-based): {error}") from None
        areas[frame], volumes[frame] = view.area, single_plane_volume(view)
        frame_notes.append("; ".join(islands.describe() for islands in view.removed))
    if spacing_rc is not None:
        volumes /= MM3_PER_ML
    phases, beats = detect_beats(volumes, hysteresis, min_stroke_fraction, smoothing_frames)
    frames_per_beat = rhythm_period(volumes)
    counted = [beat.ef_percent for beat in beats_in_ef(beats, frames_per_beat)]
    ef = float(np.mean(counted)) if counted else math.nan
    return SequenceAnalysis(name, areas, volumes, phases, beats, ef, physical=spacing_rc is not None,
                            frame_notes=frame_notes, frames_per_beat=frames_per_beat)


# ------------------------------------------------------------------------------------------------- files

def sequence_name(path: Path) -> str:
    name = path.name
    return next((name[:-len(e)] for e in SEQUENCE_ENDINGS if name.lower().endswith(e)), path.stem)


def list_sequences(path: Path) -> list[Path]:
    """`path` itself, or the label sequences in the folder `path`, sorted; `x.nii` beside `x.nii.gz` is
    refused (ITK opens either when asked for the other)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(path, "does not exist")
    files = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.name.lower().endswith(SEQUENCE_ENDINGS)]
    if not files:
        raise InputError(path, f"holds no label sequences ({', '.join(SEQUENCE_ENDINGS)})")
    refuse_nifti_twins(files)
    return files


def read_label_sequence(path: Path, spacing_mm: Optional[float] = None
                        ) -> tuple[np.ndarray, Optional[tuple[float, float]]]:
    """A label sequence with its frames on the last image axis (x, y, t), as CAMUS `_half_sequence_gt` files,
    as a (frames, rows, columns) array, and its (row, column) spacing in mm. A file with in-plane spacing 1
    has none (EchoNet-Dynamic): `spacing_mm` gives it one, else the result is in pixels (None). The file passes
    the shared image check first (SimpleITK reads a NaN spacing as 1 mm and NaN NIfTI voxels as 0)."""
    import SimpleITK as sitk  # only the sequence reader needs it; nnU-Net depends on it anyway

    check_image_file(path, spatial_axes=PLANE_AXES)  # the third axis holds the frames
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(path, f"cannot be read as a label sequence ({str(error).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"is not a label sequence: expected a 3D image (x, y, frames), got "
                               f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} component(s)")
    check_spacing(path, image.GetSpacing()[:2], "as SimpleITK reads it")
    array = sitk.GetArrayFromImage(image)
    check_finite_voxels(path, array)
    labels = np.rint(array)
    if not np.array_equal(labels, array):
        raise InputError(path, "holds non-integer values; expected a label sequence")
    file_spacing = (float(image.GetSpacing()[1]), float(image.GetSpacing()[0]))
    has_spacing = not np.allclose(file_spacing, 1.0)
    if has_spacing and spacing_mm is not None and not np.allclose(file_spacing, spacing_mm, rtol=1e-4):
        raise InputError(path, f"pixel spacing {file_spacing[1]:g} x {file_spacing[0]:g} mm in the file does not "
                               f"match --spacing {spacing_mm:g}")
    spacing = file_spacing if has_spacing else ((spacing_mm, spacing_mm) if spacing_mm is not None else None)
    return labels.astype(np.int32), spacing


def frame_rows(analysis: SequenceAnalysis) -> list[dict]:
    notes = analysis.frame_notes or [""] * len(analysis.lv_volume)
    return [{"sequence": analysis.name, "frame": frame, "lv_area": float(area), "lv_volume": float(volume),
             "phase": phase, "note": note}
            for frame, (area, volume, phase, note) in enumerate(zip(analysis.lv_area, analysis.lv_volume,
                                                                   analysis.phases, notes))]


def summary_row(analysis: SequenceAnalysis) -> dict:
    beats = analysis.beats
    return {"sequence": analysis.name, "frames": len(analysis.lv_volume), "beats": len(beats),
            "ef_percent": analysis.ef_percent,
            "edv": float(np.mean([b.edv for b in beats])) if beats else math.nan,
            "esv": float(np.mean([b.esv for b in beats])) if beats else math.nan,
            "ef_per_beat": " ".join(f"{b.ef_percent:.2f}" for b in beats),
            "ed_frames": " ".join(str(b.ed_frame) for b in beats),
            "es_frames": " ".join(str(b.es_frame) for b in beats),
            "area_unit": analysis.area_unit, "volume_unit": analysis.volume_unit, "note": analysis.note}


def curve_file_name(analysis: SequenceAnalysis) -> str:
    return f"{analysis.name}_volume_curve.png"


def write_sequence_reports(analyses: Sequence[SequenceAnalysis], output: Path) -> None:
    """Writes sequence_frames.csv, sequence_summary.csv and `<sequence>_volume_curve.png` per sequence into
    `output` (created if needed), all or none of them."""
    with staged_files(output) as staging:
        write_csv([row for analysis in analyses for row in frame_rows(analysis)], FRAME_COLUMNS,
                  staging / "sequence_frames.csv")
        write_csv([summary_row(analysis) for analysis in analyses], SUMMARY_COLUMNS, staging / "sequence_summary.csv")
        for analysis in analyses:
            write_volume_curve(analysis, staging / curve_file_name(analysis))
