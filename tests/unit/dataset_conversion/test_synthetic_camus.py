"""The synthetic echocardiogram generator: CAMUS 2023 layout, determinism, anatomy-consistent labels, life-size
hearts at any image size, CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dataset_conversion import synthetic_camus
from dataset_conversion.synthetic_camus import generate_synthetic_camus, main
from helpers.paths import REPOSITORY
from nnunetv2_msvmamba.clinical.geometry import measure_view
from nnunetv2_msvmamba.clinical.volumes import MM3_PER_ML, biplane_volume, ejection_fraction
from nnunetv2_msvmamba.common.errors import InputError

ROWS, COLUMNS = 112, 96          # non-square, so a transposed read shows
SPACING_MM = 1.6                 # a 179 x 154 mm field of view: room for a life-size heart
SEED = 7
N_PATIENTS = 4
SPLIT_COUNTS = (2, 1, 1)
PATIENTS = [f"patient{i:04d}" for i in range(1, N_PATIENTS + 1)]
VIEWS = ("2CH", "4CH")
INFO_KEYS = ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"]
SMALL = dict(image_size=(ROWS, COLUMNS), spacing_mm=SPACING_MM, n_frames=(3, 5), split=SPLIT_COUNTS)


def expected_patient_files(patient: str) -> set[str]:
    names = {f"Info_{view}.cfg" for view in VIEWS}
    for view in VIEWS:
        for phase in ("ED", "ES", "half_sequence"):
            names |= {f"{patient}_{view}_{phase}.nii.gz", f"{patient}_{view}_{phase}_gt.nii.gz"}
    return names


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def read_info(path: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def ground_truths(root: Path):
    """(path, 2D label frame) for every ED/ES ground truth and every half-sequence ground-truth frame."""
    for patient in PATIENTS:
        folder = root / "database_nifti" / patient
        for view in VIEWS:
            for phase in ("ED", "ES"):
                path = folder / f"{patient}_{view}_{phase}_gt.nii.gz"
                yield path, read_array(path)
            path = folder / f"{patient}_{view}_half_sequence_gt.nii.gz"
            for frame in read_array(path):
                yield path, frame


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_camus(tmp_path_factory.mktemp("synthetic") / "camus", n_patients=N_PATIENTS,
                                    seed=SEED, **SMALL)


def test_layout_matches_the_camus_2023_release(dataset: Path):
    assert sorted(p.name for p in dataset.iterdir()) == ["database_nifti", "database_split", "synthetic_camus.json"]
    assert sorted(p.name for p in (dataset / "database_nifti").iterdir()) == PATIENTS
    for patient in PATIENTS:
        assert {p.name for p in (dataset / "database_nifti" / patient).iterdir()} == expected_patient_files(patient)
    assert sorted(p.name for p in (dataset / "database_split").iterdir()) == [
        "subgroup_testing.txt", "subgroup_training.txt", "subgroup_validation.txt"]


def test_split_files_list_every_patient_exactly_once(dataset: Path):
    subgroups = {name: (dataset / "database_split" / f"subgroup_{name}.txt").read_text().splitlines()
                 for name in ("training", "validation", "testing")}
    listed = [patient for members in subgroups.values() for patient in members]
    assert sorted(listed) == PATIENTS
    assert tuple(len(subgroups[name]) for name in ("training", "validation", "testing")) == SPLIT_COUNTS
    assert all(members == sorted(members) for members in subgroups.values())


def test_split_fractions_round_validation_and_testing_and_give_training_the_rest():
    assert synthetic_camus.subgroup_sizes((0.7, 0.1, 0.2), 30) == (21, 3, 6)
    assert synthetic_camus.subgroup_sizes((20, 4, 6), 30) == (20, 4, 6)
    with pytest.raises(ValueError, match="neither three fractions"):
        synthetic_camus.subgroup_sizes((0.5, 0.1, 0.1), 30)


def test_same_seed_gives_the_same_bytes_in_parallel_too(dataset: Path, tmp_path: Path):
    again = generate_synthetic_camus(tmp_path / "again", n_patients=N_PATIENTS, seed=SEED, num_processes=2, **SMALL)
    first, second = all_files(dataset), all_files(again)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_a_patient_does_not_depend_on_the_dataset_size(dataset: Path, tmp_path: Path):
    alone = generate_synthetic_camus(tmp_path / "alone", n_patients=1, seed=SEED, **{**SMALL, "split": (1, 0, 0)})
    folder = "database_nifti/patient0001"
    assert all_files(alone / folder) == all_files(dataset / folder)


def test_another_seed_gives_other_images_and_labels(dataset: Path, tmp_path: Path):
    other = generate_synthetic_camus(tmp_path / "other", n_patients=1, seed=SEED + 1, **{**SMALL, "split": (1, 0, 0)})
    for suffix in ("4CH_ED.nii.gz", "4CH_ED_gt.nii.gz"):
        first = read_array(dataset / "database_nifti/patient0001" / f"patient0001_{suffix}")
        second = read_array(other / "database_nifti/patient0001" / f"patient0001_{suffix}")
        assert first.shape == second.shape and not np.array_equal(first, second)


def test_images_are_2d_uint8_with_the_image_spacing_and_the_apex_at_the_top(dataset: Path):
    spacings = set()
    for patient in PATIENTS:
        folder = dataset / "database_nifti" / patient
        for view in VIEWS:
            for phase in ("ED", "ES"):
                image = sitk.ReadImage(str(folder / f"{patient}_{view}_{phase}.nii.gz"))
                label = sitk.ReadImage(str(folder / f"{patient}_{view}_{phase}_gt.nii.gz"))
                for item in (image, label):
                    assert item.GetDimension() == 2 and item.GetPixelID() == sitk.sitkUInt8
                    assert item.GetSize() == (COLUMNS, ROWS)
                    assert item.GetSpacing() == image.GetSpacing()
                spacing_x, spacing_y = image.GetSpacing()
                assert spacing_x == spacing_y and 0.9 * SPACING_MM <= spacing_x <= 1.1 * SPACING_MM
                spacings.add(spacing_x)
                # nibabel sees NIfTI's (x, y): columns first
                assert nib.load(folder / f"{patient}_{view}_{phase}.nii.gz").shape == (COLUMNS, ROWS)
                labels = sitk.GetArrayFromImage(label)
                top_row = {value: np.nonzero((labels == value).any(axis=1))[0][0] for value in (1, 2, 3)}
                assert top_row[2] < top_row[1] < top_row[3]  # apex (myocardium, cavity) above the atrium
    assert len(spacings) > 1  # spacing varies between patients, as in real acquisitions


def test_every_ground_truth_has_each_structure_and_a_closed_cavity(dataset: Path):
    around = np.ones((3, 3), bool)
    for path, labels in ground_truths(dataset):
        assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}, path
        neighbourhood = ndimage.binary_dilation(labels == 1, structure=around)
        assert not np.any(labels[neighbourhood] == 0), f"{path}: LV cavity touches the background"
        myocardium_neighbourhood = ndimage.binary_dilation(labels == 2, structure=around)
        assert np.any(labels[myocardium_neighbourhood] == 1), f"{path}: myocardium away from the cavity"


def test_the_cavity_shrinks_from_ed_to_es(dataset: Path):
    for patient in PATIENTS:
        folder = dataset / "database_nifti" / patient
        for view in VIEWS:
            area = {phase: np.count_nonzero(read_array(folder / f"{patient}_{view}_{phase}_gt.nii.gz") == 1)
                    for phase in ("ED", "ES")}
            assert area["ES"] < 0.95 * area["ED"], (patient, view, area)


def test_blood_is_dark_the_myocardium_bright_and_the_fan_black_outside(dataset: Path):
    for patient in PATIENTS:
        folder = dataset / "database_nifti" / patient
        for view in VIEWS:
            for phase in ("ED", "ES"):
                image = read_array(folder / f"{patient}_{view}_{phase}.nii.gz").astype(float)
                labels = read_array(folder / f"{patient}_{view}_{phase}_gt.nii.gz")
                cavity, myocardium, atrium = (image[labels == value].mean() for value in (1, 2, 3))
                assert myocardium > cavity + 40 and myocardium > atrium + 40, (patient, view, phase)
                assert image[0, 0] == image[0, -1] == 0 and np.count_nonzero(image) > 0.4 * image.size


def test_half_sequences_run_from_ed_to_es_as_the_info_file_says(dataset: Path):
    for patient in PATIENTS:
        folder = dataset / "database_nifti" / patient
        infos = {view: read_info(folder / f"Info_{view}.cfg") for view in VIEWS}
        for view, info in infos.items():
            assert list(info) == INFO_KEYS
            n_frames = int(info["NbFrame"])
            assert 3 <= n_frames <= 5 and info["ED"] == "1" and int(info["ES"]) == n_frames
            assert info["Sex"] in {"F", "M"} and info["ImageQuality"] in {"Good", "Medium", "Poor"}
            assert 20 <= int(info["Age"]) <= 90 and 15 <= int(info["EF"]) <= 85 and int(info["FrameRate"]) > 0
            stem = folder / f"{patient}_{view}"
            for suffix in ("", "_gt"):
                path = Path(f"{stem}_half_sequence{suffix}.nii.gz")
                sequence = sitk.ReadImage(str(path))
                ed_image = sitk.ReadImage(f"{stem}_ED{suffix}.nii.gz")
                assert sequence.GetSize() == (COLUMNS, ROWS, n_frames)
                assert nib.load(path).shape == (COLUMNS, ROWS, n_frames)  # frames along the last axis
                assert sequence.GetSpacing() == (*ed_image.GetSpacing(), 1.0)
                frames = sitk.GetArrayFromImage(sequence)
                assert np.array_equal(frames[0], sitk.GetArrayFromImage(ed_image))
                assert np.array_equal(frames[-1], read_array(Path(f"{stem}_ES{suffix}.nii.gz")))
        # patient-level entries agree between the two views, as in the release
        assert all(infos["2CH"][key] == infos["4CH"][key] for key in ("Sex", "Age", "EF"))


def test_defaults_give_the_documented_demo_size(tmp_path: Path):
    root = generate_synthetic_camus(tmp_path / "default", n_patients=1, split=(1, 0, 0), n_frames=2)
    image = sitk.ReadImage(str(root / "database_nifti/patient0001/patient0001_2CH_ED.nii.gz"))
    assert image.GetSize() == (224, 256) and 0.9 * 160 / 256 <= image.GetSpacing()[0] <= 1.1 * 160 / 256


# ------------------------------------------------------------------------------------------ life-size hearts

# Adult ranges (ASE/EACVI chamber quantification, normal and moderately abnormal hearts), and the depth of an
# adult apical view: the numbers a clinician expects from a synthetic patient.
ADULT_EDV_ML, ADULT_ESV_ML, ADULT_EF_PERCENT = (50.0, 200.0), (20.0, 100.0), (35.0, 75.0)
ADULT_ED_CAVITY_AREA_MM2 = (1500.0, 5000.0)  # LV cavity of one apical view at end diastole: 15-50 cm²
APICAL_DEPTH_MM = (120.0, 200.0)
MAX_EF_DIFFERENCE_TO_INFO = 2.0  # the Info EF is the biplane area-length EF, rounded to a whole percent


def measured_hearts(root: Path) -> dict[str, dict[str, float]]:
    """Per patient: EDV, ESV, EF by the package's own Simpson's biplane method on the ground truth, the ED
    cavity areas, the field of view (mm) and the Info EF."""
    hearts = {}
    for folder in sorted((root / "database_nifti").iterdir()):
        views, areas = {"ED": [], "ES": []}, []
        for view in VIEWS:
            for phase in ("ED", "ES"):
                image = sitk.ReadImage(str(folder / f"{folder.name}_{view}_{phase}_gt.nii.gz"))
                spacing_x, spacing_y = image.GetSpacing()
                measurement = measure_view(sitk.GetArrayFromImage(image), (spacing_y, spacing_x))
                views[phase].append(measurement)
                areas += [measurement.area] if phase == "ED" else []
        columns, rows = image.GetSize()
        edv, esv = (biplane_volume(*views[phase]) / MM3_PER_ML for phase in ("ED", "ES"))
        hearts[folder.name] = {"edv": edv, "esv": esv, "ef": ejection_fraction(edv, esv),
                               "area_min": min(areas), "area_max": max(areas), "depth": rows * spacing_y,
                               "width": columns * spacing_x,
                               "info_ef": float(read_info(folder / "Info_4CH.cfg")["EF"])}
    return hearts


@pytest.mark.parametrize("size, spacing", [((64, 64), None), ((128, 112), None), ((256, 224), None),
                                           ((96, 80), 2.0)], ids=["64", "128", "256", "96x80-spacing-2"])
def test_hearts_are_life_size_at_every_image_size(tmp_path: Path, size, spacing):
    """Whatever the image size (the demo's 64 x 64 included), the generated patients' volumes and EF, as the
    clinical layer measures them on the ground truth, are an adult's; the field of view is an apical view's
    (given a spacing, it is size x spacing and the heart is still life-size); the Info EF agrees."""
    given = {} if spacing is None else {"spacing_mm": spacing}
    root = generate_synthetic_camus(tmp_path / "camus", n_patients=4, seed=11, image_size=size, n_frames=2,
                                    split=(4, 0, 0), **given)
    for patient, heart in measured_hearts(root).items():
        assert ADULT_EDV_ML[0] <= heart["edv"] <= ADULT_EDV_ML[1], (patient, heart)
        assert ADULT_ESV_ML[0] <= heart["esv"] <= ADULT_ESV_ML[1], (patient, heart)
        assert ADULT_EF_PERCENT[0] <= heart["ef"] <= ADULT_EF_PERCENT[1], (patient, heart)
        assert ADULT_ED_CAVITY_AREA_MM2[0] <= heart["area_min"] <= heart["area_max"] <= ADULT_ED_CAVITY_AREA_MM2[1]
        assert abs(heart["ef"] - heart["info_ef"]) <= MAX_EF_DIFFERENCE_TO_INFO, (patient, heart)
        if spacing is None:
            assert APICAL_DEPTH_MM[0] <= heart["depth"] <= APICAL_DEPTH_MM[1], (patient, heart)
        else:
            assert heart["depth"] == pytest.approx(size[0] * spacing, rel=0.1)
            assert heart["width"] == pytest.approx(size[1] * spacing, rel=0.1)


def test_a_spacing_too_small_for_a_heart_is_refused_and_the_smallest_it_suggests_works(tmp_path: Path, capsys):
    """A field of view that cannot hold a life-size heart is refused in one line naming --spacing, rather than
    shrinking the heart; the smallest spacing the message suggests is accepted."""
    root = tmp_path / "camus"
    base = [str(root), "-n", "1", "--size", "64", "64", "--frames", "2", "2", "--split", "1", "0", "0", "-np", "1"]
    assert main([*base, "--spacing", "0.3"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: --spacing: 0.3 mm makes the 64 x 64 images a 19 x 19 mm field of view")
    assert message.count("\n") == 1 and "too small for a life-size heart" in message and not root.exists()
    suggested = message.split("use --spacing ", 1)[1].split(" ", 1)[0]
    assert main([*base, "--spacing", suggested]) == 0 and (root / "database_nifti" / "patient0001").is_dir()
    capsys.readouterr()
    for bad in ("0", "-1", "nan", "inf"):
        assert main([str(tmp_path / "bad"), "--spacing", bad]) == 2
        assert capsys.readouterr().err.startswith("error: --spacing: ")
    assert not (tmp_path / "bad").exists()


def test_cli_writes_refuses_an_existing_folder_and_overwrites_only_its_own_output(tmp_path: Path, capsys):
    root = tmp_path / "camus"
    arguments = [str(root), "-n", "2", "--seed", "3", "--size", "80", "72", "--frames", "2", "3",
                 "--split", "1", "0", "1", "-np", "1"]
    assert main(arguments) == 0
    assert f"wrote 2 synthetic patients (1 training, 0 validation, 1 testing) to {root}" in capsys.readouterr().out
    before = all_files(root)

    assert main(arguments) == 2
    assert capsys.readouterr().err.strip() == f"error: {root}: exists and is not empty; pass --overwrite to replace it"
    assert all_files(root) == before

    assert main([*arguments[:4], "4", *arguments[5:], "--overwrite"]) == 0  # another seed replaces the whole dataset
    assert all_files(root) != before
    assert sorted(p.name for p in (root / "database_nifti").iterdir()) == ["patient0001", "patient0002"]

    user_data = tmp_path / "my_real_camus"
    (user_data / "database_nifti").mkdir(parents=True)
    assert main([str(user_data), "--overwrite"]) == 2
    assert "refusing to replace it" in capsys.readouterr().err and (user_data / "database_nifti").is_dir()


def test_cli_accepts_an_existing_empty_folder_and_rejects_bad_settings(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "-n", "1", "--size", "64", "64", "--frames", "2", "2", "--split", "1", "0", "0", "-np", "1"]) == 0
    assert (empty / "database_nifti" / "patient0001").is_dir()
    capsys.readouterr()
    for bad in (["--size", "32", "64"], ["-n", "0"], ["--frames", "5", "3"], ["--split", "0.5", "0.1", "0.1"]):
        assert main([str(tmp_path / "bad"), *bad]) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith(f"error: {tmp_path / 'bad'}: ") and "\n" not in message
    assert not (tmp_path / "bad").exists()


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    written = []

    def fail_on_second_patient(record, folder):
        if written:
            raise OSError("disk full")
        written.append(record.name)
        real_write_patient(record, folder)

    real_write_patient = synthetic_camus.write_patient
    monkeypatch.setattr(synthetic_camus, "write_patient", fail_on_second_patient)
    with pytest.raises(InputError, match="disk full") as raised:  # one line naming the output, not a traceback
        generate_synthetic_camus(tmp_path / "camus", n_patients=2, **{**SMALL, "split": (2, 0, 0)})
    assert raised.value.path == tmp_path / "camus"
    assert written == ["patient0001"] and list(tmp_path.iterdir()) == []


def test_command_line_help_and_error_in_a_real_process(tmp_path: Path):
    module = [sys.executable, "-m", "dataset_conversion.synthetic_camus"]
    shown = subprocess.run([*module, "--help"], capture_output=True, text=True, cwd=REPOSITORY)
    assert shown.returncode == 0
    for option in ("ROOT", "--seed", "--size", "-np", "--overwrite", "--frames", "--split", "--spacing"):
        assert option in shown.stdout
    assert "life-size" in shown.stdout and "160 mm deep" in shown.stdout
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    refused = subprocess.run([*module, str(tmp_path / "occupied")], capture_output=True, text=True, cwd=REPOSITORY)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'occupied'}: ")
