"""`python -m helpers.held_converter ARGS`: msvmamba_convert_camus that, under a test's handshake
(tests/helpers/handshake.py), converts its first patient and then holds every other one at the handshake until the
test lets it go on, so that a test can kill or interrupt a real conversion in the middle of its work on a machine
however busy. A module of its own (not a function of a test) so that worker processes import it by name whatever
their start method."""
from __future__ import annotations

import sys

from dataset_conversion import camus
from helpers.handshake import Handshake, handle_ctrl_c_as_from_a_terminal

original_convert_patient = camus.convert_patient


def held_convert_patient(task: camus.PatientTask) -> camus.PatientResult:
    handshake = Handshake.from_environment()
    if handshake is not None and not handshake.claim_first():
        handshake.wait_here()
    return original_convert_patient(task)


if __name__ == "__main__":
    handle_ctrl_c_as_from_a_terminal()
    from helpers import held_converter  # pickled by this name, not as __main__'s
    camus.convert_patient = held_converter.held_convert_patient
    sys.exit(camus.main(sys.argv[1:]))
