"""Options the commands share are parsed one way (nnunetv2_msvmamba.common.arguments): every command that takes
-np refuses a count below 1 with argparse's own usage error, before any work."""
from __future__ import annotations

import pytest

from helpers.nnunet import run_command

COMMANDS_WITH_NP = ["msvmamba_evaluate", "msvmamba_clinical", "msvmamba_convert_camus", "msvmamba_convert_echonet",
                    "msvmamba_make_synthetic_camus", "msvmamba_demo"]


@pytest.mark.parametrize("command", COMMANDS_WITH_NP)
def test_np_below_one_is_a_usage_error_before_any_work(command, tmp_path):
    result = run_command([command, "-np", "0"], check=False, cwd=tmp_path)
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert last_line == f"{command}: error: argument -np/--num-processes: must be at least 1, got 0", last_line
    assert list(tmp_path.iterdir()) == []
