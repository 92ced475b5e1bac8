"""msvmamba_convert_camus as installed, and what it writes through nnU-Net's own planning with
--verify_dataset_integrity."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.camus_fixtures import DATASET, PatientData, release_2023_under
from helpers.nnunet import run_command


@pytest.fixture
def release_2023(tmp_path: Path) -> tuple[Path, dict[str, PatientData]]:
    return release_2023_under(tmp_path)


def test_installed_command_and_nnunet_verify_dataset_integrity(release_2023, nnunet_folders):
    help_text = run_command(["msvmamba_convert_camus", "--help"]).stdout
    assert all(option in help_text for option in ("--half-sequence", "--overwrite", "-np", "-d"))

    env = nnunet_folders.env()
    converted = run_command(["msvmamba_convert_camus", str(release_2023[0]), "--half-sequence", "-np", "2"],
                            env=env)
    assert "cases: 35 in imagesTr/labelsTr, 4 in imagesTs/labelsTs" in converted.stdout
    splits_file = nnunet_folders.preprocessed / DATASET / "splits_final.json"
    splits = splits_file.read_text()

    planned = run_command(["nnUNetv2_plan_and_preprocess", "-d", "601", "-c", "2d", "--verify_dataset_integrity",
                           "-np", "1", "-npfp", "1"], env=env)
    assert "verify_dataset_integrity Done" in planned.stdout
    assert not re.search(r"^(warning|error)\b", planned.stdout, re.IGNORECASE | re.MULTILINE), planned.stdout
    preprocessed = nnunet_folders.preprocessed / DATASET
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    # the 2D configuration's target spacing is the median of the source spacings (y, x), not 1 x 1
    assert plans["configurations"]["2d"]["spacing"] == pytest.approx([0.25, 0.154])
    trained = {p.name for p in (nnunet_folders.raw / DATASET / "imagesTr").iterdir()}
    assert sorted(p.name for p in (preprocessed / "nnUNetPlans_2d").glob("*_seg.b2nd")) == sorted(
        name.replace("_0000.nii.gz", "_seg.b2nd") for name in trained)
    assert splits_file.read_text() == splits
