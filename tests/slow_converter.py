"""`python -m slow_converter ARGS`: msvmamba_convert_camus whose patients each take at least half a second, so
that a test can kill or interrupt a real conversion in the middle of its work. A module of its own (not a
function of a test) so that worker processes import it by name whatever their start method."""
from __future__ import annotations

import sys
import time

from dataset_conversion import camus

SECONDS_PER_PATIENT = 0.5
original_convert_patient = camus.convert_patient


def slow_convert_patient(task):
    time.sleep(SECONDS_PER_PATIENT)
    return original_convert_patient(task)


if __name__ == "__main__":
    import slow_converter  # pickled by this name, not as __main__'s
    camus.convert_patient = slow_converter.slow_convert_patient
    sys.exit(camus.main(sys.argv[1:]))
