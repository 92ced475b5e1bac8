"""msvmamba_convert_echonet as installed, and what it writes through nnU-Net's own planning with
--verify_dataset_integrity."""
from __future__ import annotations

from pathlib import Path

import pytest

from dataset_conversion.echonet_synthetic import SyntheticVideo
from helpers.echonet_fixtures import DATASET, cases_of, fixture_release_under
from helpers.nnunet import run_command


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, SyntheticVideo]]:
    return fixture_release_under(tmp_path)


def test_installed_command_and_nnunet_verify_dataset_integrity(release, nnunet_folders):
    help_text = run_command(["msvmamba_convert_echonet", "--help"]).stdout
    assert all(option in help_text for option in ("--overwrite", "--spacing", "--skip-missing", "--skip-unreadable",
                                                  "-np", "-d"))

    env = nnunet_folders.env()
    converted = run_command(["msvmamba_convert_echonet", str(release[0]), "-np", "2"], env=env)
    assert "converted: 4 TRAIN, 2 VAL, 2 TEST" in converted.stdout
    splits_file = nnunet_folders.preprocessed / DATASET / "splits_final.json"
    splits = splits_file.read_text()

    run_command(["nnUNetv2_plan_and_preprocess", "-d", "602", "-c", "2d", "--verify_dataset_integrity",
                 "-np", "1", "-npfp", "1"], env=env)
    preprocessed = nnunet_folders.preprocessed / DATASET
    assert (preprocessed / "nnUNetPlans.json").is_file() and (preprocessed / "dataset_fingerprint.json").is_file()
    assert sorted(p.name for p in (preprocessed / "nnUNetPlans_2d").glob("*_seg.b2nd")) == sorted(
        f"{case}_seg.b2nd" for case in cases_of("TRAIN") | cases_of("VAL"))
    assert splits_file.read_text() == splits
