"""benchmarks/ef_echonet_synthetic.py --quick for real: a synthetic EchoNet-Dynamic release through the converter,
nnU-Net's planning and training, and msvmamba_predict_video with --file-list; the EF agreement it prints is the one
the command wrote, against FileList.csv's EF of the TEST videos."""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys

from helpers.benchmark_scripts import BENCHMARKS

BENCHMARK = BENCHMARKS / "ef_echonet_synthetic.py"


def test_quick_run_reports_the_ef_of_every_test_video_against_file_list(tmp_path):
    workspace = tmp_path / "run"
    command = [sys.executable, str(BENCHMARK), "--quick", "--keep", str(workspace)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-4000:]
    output = completed.stdout
    with open(workspace / "EchoNet-Dynamic" / "FileList.csv", newline="") as f:
        test_efs = {row["FileName"]: float(row["EF"]) for row in csv.DictReader(f) if row["Split"] == "TEST"}
    agreement = json.loads((workspace / "predictions" / "ef_agreement.json").read_text())
    # the command reports EFs to 2 decimals, FileList.csv has 4
    assert {pair["sequence"]: pair["reference_ef_percent"] for pair in agreement["pairs"]} == {
        name: round(ef, 2) for name, ef in test_efs.items()}
    assert (workspace / "predictions" / "ef_bland_altman.png").stat().st_size > 0
    assert f"against FileList.csv ({len(test_efs)} TEST videos, {agreement['n']} with an EF):" in output
    flags = {pair["sequence"]: pair["implausible_beats"] for pair in agreement["pairs"]}
    for name, reference in test_efs.items():
        # a barely trained model can give a beat ESV > EDV (one run: EF -57.0): never a plain number then
        flag = rf" \({flags[name]} beat\(s\) with ESV > EDV: physiologically implausible\)" if flags[name] else ""
        ef = r"-?\d+\.\d" if flags[name] else r"none|\d+\.\d"
        line = rf"^  {name}: predicted ({ef}){flag}, FileList {round(reference, 2):.1f}$"
        assert re.search(line, output, re.MULTILINE), output
    mae = re.search(r"MAE (\S+) EF points$", output, re.MULTILINE).group(1)
    assert (mae == "nan") == math.isnan(agreement["mae"]) and (mae == "nan" or float(mae) == round(agreement["mae"], 2))
