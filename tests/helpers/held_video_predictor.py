"""`python -m helpers.held_video_predictor ARGS`: msvmamba_predict_video that, under a test's handshake
(tests/helpers/handshake.py), predicts its first loop and then holds before predicting any other one until the
test lets it go on (or interrupts it), so that a test can press Ctrl-C after exactly one finished loop on a machine
however busy."""
from __future__ import annotations

import sys

from helpers.handshake import Handshake, handle_ctrl_c_as_from_a_terminal
from nnunetv2_msvmamba.video import cli
from nnunetv2_msvmamba.video.batched_prediction import BatchedFramePredictor

original_predict_frames = BatchedFramePredictor.predict_frames


def held_predict_frames(*args, **kwargs):
    handshake = Handshake.from_environment()
    if handshake is not None and not handshake.claim_first():
        handshake.wait_here()
    return original_predict_frames(*args, **kwargs)


if __name__ == "__main__":
    handle_ctrl_c_as_from_a_terminal()
    BatchedFramePredictor.predict_frames = held_predict_frames  # what cli predicts each loop's frames with
    sys.exit(cli.main(sys.argv[1:]))
