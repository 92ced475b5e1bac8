"""Times msvmamba_convert_echonet on a synthetic EchoNet-Dynamic release (default: 1,000 videos of 175 frames,
a typical EchoNet-Dynamic length, with the traced frames in the last cardiac cycle so that nearly every frame is
decoded) and prints the figure, with an extrapolation to the full 10,030-video release.

    python benchmarks/bench_convert_echonet.py [--videos 1000] [--frames 175] [-np N]

Only the conversion is timed, not writing the synthetic videos. Everything lives in a temporary folder
that is removed at the end."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dataset_conversion.echonet import convert_echonet  # noqa: E402
from dataset_conversion.echonet_synthetic import random_release_videos, write_release  # noqa: E402

FULL_RELEASE_VIDEOS = 10_030


def main() -> None:
    """Benchmark of the EchoNet-Dynamic converter on synthetic videos."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=1000, help="synthetic videos (default 1000)")
    parser.add_argument("--frames", type=int, default=175, help="frames per video (default 175)")
    parser.add_argument("-np", "--num-processes", type=int, default=os.cpu_count() or 1,
                        help="converter worker processes (default: all CPU cores)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_echonet_") as workspace:
        workspace = Path(workspace)
        for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
            (workspace / variable).mkdir()
            os.environ[variable] = str(workspace / variable)
        release = workspace / "EchoNet-Dynamic"
        write_release(release, random_release_videos(args.videos, args.frames), num_processes=args.num_processes)

        start = time.perf_counter()
        summary = convert_echonet(release, num_processes=args.num_processes)
        seconds = time.perf_counter() - start

    converted = sum(summary.videos_converted.values())
    if converted != args.videos:
        raise SystemExit(f"only {converted} of {args.videos} videos were converted:\n{summary.report()}")
    print(f"converted {args.videos} synthetic videos ({args.frames} frames each, {2 * args.videos} cases) in "
          f"{seconds:.1f} s with {args.num_processes} worker processes on {os.cpu_count()} CPU cores: "
          f"{args.videos / seconds:.1f} videos/s, so about "
          f"{FULL_RELEASE_VIDEOS / args.videos * seconds / 60:.1f} min for the full {FULL_RELEASE_VIDEOS:,}-video "
          f"release")


if __name__ == "__main__":
    main()
