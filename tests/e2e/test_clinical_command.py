"""msvmamba_clinical as installed, on a dataset made by the real converter."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from helpers.clinical_fixtures import converted_synthetic_camus
from helpers.nnunet import run_command
from helpers.tables import read_rows


@pytest.fixture(scope="module")
def camus(tmp_path_factory) -> Path:
    return converted_synthetic_camus(tmp_path_factory.mktemp("clinical_camus"))


def test_console_script(camus, tmp_path):
    """The installed command, as a user runs it (its --help is checked with every README command)."""
    result = run_command(["msvmamba_clinical", "--pred", f"x={tmp_path / 'missing'}", "-o", str(tmp_path / "o")],
                         check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing'}: prediction folder of model x does not exist"
    result = run_command(["msvmamba_clinical", "--reference", str(camus / "labelsTs"), "-o", str(tmp_path / "o"),
                          "-np", "1"])
    assert "wrote clinical_per_patient.csv" in result.stdout
    assert not math.isnan(float(read_rows(tmp_path / "o" / "clinical_per_patient.csv")[0]["ef_percent"]))
