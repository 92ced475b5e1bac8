"""`msvmamba_demo`: the whole product on synthetic echocardiograms, from one command.

Every step is the real command a user would type, run in a subprocess with its output streamed to the console
and kept in a log: generate synthetic patients in the CAMUS 2023 layout, convert them with
`msvmamba_convert_camus`, plan with `nnUNetv2_plan_and_preprocess`, train MSV-Mamba and stock nnU-Net on the
same short schedule with `nnUNetv2_train`, predict the test patients with `nnUNetv2_predict`, compare both with
`msvmamba_evaluate`, measure volumes and ejection fraction with `msvmamba_clinical`, and segment a test patient's
whole half sequences with `msvmamba_predict_video`. A re-run reuses the steps that finished with the same settings.

runner.py runs and caches the steps, steps.py says what they are, report.py prints the results, cli.py ties them.
"""
from .cli import main

__all__ = ["main"]
