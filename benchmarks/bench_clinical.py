"""Times msvmamba_clinical on CAMUS-sized label folders (default: 1,000 cases = 250 patients x 2CH/4CH x ED/ES,
778 x 549 pixels as the CAMUS images, at the synthetic generator's life-size spacing for that size, 0.219 mm) against the target of 1,000 cases in a minute, and
against reading the same files with nnU-Net's reader alone (the floor any analysis of them has), measured in
the same run.

    python benchmarks/bench_clinical.py [--cases 1000] [--size 778 549] [-np 2]

The label maps are the synthetic CAMUS generator's anatomy (cavity, myocardium, atrium) of a few distinct
hearts, repeated under different patient names; writing them is not timed. The command runs as a user runs
it (the installed console script, process start-up included) with the ground truth as --reference and a
cases.csv with the EF, so the agreement statistics and both plots are part of the timing. Everything lives in
a temporary folder that is removed at the end."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from measure import cpu_and_cores  # noqa: E402

from dataset_conversion.common import write_image_2d  # noqa: E402
from dataset_conversion.synthetic_camus import VIEWS, GenerationSettings, default_spacing, place_heart  # noqa: E402
from nnunetv2_msvmamba.common.commands import command_path  # noqa: E402
from nnunetv2_msvmamba.evaluation.label_folders import read_label_map, reader_class  # noqa: E402

TARGET_SECONDS_PER_1000 = 60.0
DISTINCT_HEARTS = 6


def write_cases(folder: Path, n_patients: int, size: tuple[int, int]) -> Path:
    """`n_patients` x 4 label files in the CAMUS converter's naming, and a cases.csv with an EF per case."""
    labels = folder / "labelsTs"
    labels.mkdir(parents=True)
    settings = GenerationSettings(image_size=size, spacing_mm=default_spacing(size), n_frames=(2, 2), seed=0)
    rng = np.random.default_rng(0)
    hearts = [place_heart(rng, settings) for _ in range(DISTINCT_HEARTS)]
    rows = ["case,patient,view,phase,EF"]
    for index in range(n_patients):
        patient = f"patient{index + 1:04d}"
        drawings = hearts[index % DISTINCT_HEARTS]
        for view in VIEWS:
            for phase, frame in (("ED", 0), ("ES", -1)):
                case = f"{patient}_{view}_{phase}"
                write_image_2d(drawings[view].anatomies[frame].labels, (settings.spacing_mm,) * 2,
                               labels / f"{case}.nii.gz")
                rows.append(f"{case},{patient},{view},{phase},{50 + index % 20}")
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    return labels


def main() -> None:
    """Benchmark of msvmamba_clinical on CAMUS-sized cases."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="label files, a multiple of 4 (default 1000)")
    parser.add_argument("--size", type=int, nargs=2, default=[778, 549], metavar=("ROWS", "COLUMNS"),
                        help="image size (default: 778 549, a CAMUS image)")
    parser.add_argument("-np", "--num-processes", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()
    if args.cases < 4 or args.cases % 4:
        parser.error("--cases must be a positive multiple of 4 (2 views x ED/ES per patient)")

    with tempfile.TemporaryDirectory(prefix="bench_clinical_") as workspace:
        workspace = Path(workspace)
        labels = write_cases(workspace, args.cases // 4, tuple(args.size))
        files = sorted(labels.iterdir())

        start = time.perf_counter()
        reader = reader_class(None, ".nii.gz", files[0])
        for path in files:
            read_label_map(reader, path)
        read_seconds = time.perf_counter() - start

        start = time.perf_counter()
        subprocess.run([command_path("msvmamba_clinical"), "--reference", str(labels), "--cases",
                        str(workspace / "cases.csv"), "-o", str(workspace / "out"), "-np", str(args.num_processes)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start

    per_case_ms = 1000 * seconds / args.cases
    target_ms = TARGET_SECONDS_PER_1000
    print(f"msvmamba_clinical on {args.cases} cases of {args.size[0]} x {args.size[1]} pixels "
          f"({args.cases // 4} patients, -np {args.num_processes}; {cpu_and_cores()}):")
    print(f"  {seconds:.1f} s in all, {per_case_ms:.1f} ms per case; target {target_ms:.0f} ms per case "
          f"(1,000 cases in a minute): {per_case_ms / target_ms:.2f} x the target "
          f"({'met' if per_case_ms <= target_ms else 'NOT met'})")
    print(f"  reading the same files alone with nnU-Net's reader, one process: {1000 * read_seconds / args.cases:.1f} "
          f"ms per case; the whole command takes {seconds / read_seconds:.2f} x that")


if __name__ == "__main__":
    main()
