"""The bidirectional Mamba mixer on the CPU: its Numba path against its generic path with the same Numba scan.

The Numba path (`Mamba._numba_forward`) keeps the mixer channels last, fuses the convolution and its SiLU, and
reads the reverse direction in place; the generic path (`Mamba._reference_forward`, what the mixer runs under
torch.compile and on the other backends) runs PyTorch's conv1d on the sequences and their flipped copies, batched.
Both run in this process, alternating, at the LMS pixel-window shapes of the every-stage network on the 256 x 256
ResEnc-M plans (batch 4, windows of 16 x 16 positions); the figure is the generic path's time over the Numba
path's, for inference (no gradient) and for a training step's forward + backward. The outputs of both are
compared too.

    python benchmarks/bench_mixer.py            # the four largest decoder stages, median of 5 after 1 warm-up
    python benchmarks/bench_mixer.py --quick    # one small shape, 1 repeat after 1 warm-up: a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Optional

import torch

from measure import cpu_and_cores

# (sequences, length, channels): the pixel-window mixers of the decoder stages at 256^2, 128^2, 64^2 and 32^2
STAGE_SHAPES = {"256x256 stage": (1024, 256, 32), "128x128 stage": (256, 256, 64), "64x64 stage": (64, 256, 128),
                "32x32 stage": (16, 256, 256)}
QUICK_SHAPES = {"small": (8, 64, 16)}


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, 1 repeat after 1 warm-up: a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per path, median (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's default)")
    return parser.parse_args(argv)


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def mixer_runs(mixer, sequences: torch.Tensor, path: str) -> dict[str, Callable[[], None]]:
    """Inference and forward + backward through one of the mixer's paths (private methods: the benchmark compares
    them; users reach them through the backend choice)."""
    forward = mixer._numba_forward if path == "numba" else mixer._reference_forward
    leaf = sequences.clone().requires_grad_()
    output_grad = torch.randn_like(sequences)

    def inference() -> None:
        with torch.no_grad():
            forward(sequences, True)

    def train() -> None:
        forward(leaf, True).backward(output_grad)
    return {"inference": inference, "forward + backward": train}


def measure_shape(shape: tuple[int, int, int], repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median seconds per path and mode, the paths alternating (ABBA) in each round."""
    from nnunetv2_msvmamba.ssm import Mamba
    count, length, channels = shape
    torch.manual_seed(0)
    mixer = Mamba(channels)
    sequences = torch.randn(count, length, channels)
    runs = {path: mixer_runs(mixer, sequences, path) for path in ("numba", "generic")}
    medians = {}
    for mode in ("inference", "forward + backward"):
        samples = {"numba": [], "generic": []}
        for round_index in range(warmup + repeats):
            order = ("numba", "generic") if round_index % 2 == 0 else ("generic", "numba")
            for path in order:
                seconds = timed(runs[path][mode])
                if round_index >= warmup:
                    samples[path].append(seconds)
        medians[mode] = {path: statistics.median(values) for path, values in samples.items()}
    return medians


def output_difference(shape: tuple[int, int, int]) -> float:
    """max |Numba path - generic path| / max |generic path| of the mixer's output on one input of `shape`."""
    from nnunetv2_msvmamba.ssm import Mamba
    count, length, channels = shape
    torch.manual_seed(1)
    mixer, sequences = Mamba(channels), torch.randn(min(count, 4), length, channels)
    with torch.no_grad():
        numba, generic = mixer._numba_forward(sequences, True), mixer._reference_forward(sequences, True)
    return ((numba - generic).abs().max() / generic.abs().max()).item()


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from nnunetv2_msvmamba.ssm.backend import resolve_backend
    if resolve_backend(torch.device("cpu")) != "numba":
        print("error: the Numba backend is not in use on the CPU (is numba installed? MSVMAMBA_SSM_BACKEND set?)",
              file=sys.stderr)
        return 1
    shapes = QUICK_SHAPES if args.quick else STAGE_SHAPES
    repeats, warmup = (1, 1) if args.quick else (args.repeats, args.warmup)
    print(f"machine: {cpu_and_cores()}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"bidirectional Mamba mixer (d_state 16, expand 2), median of {repeats} after {warmup} warm-up round(s), "
          f"the paths alternating; generic = the same Numba scan on flipped, concatenated copies and PyTorch's "
          f"conv1d")
    print(f"{'shape (sequences x L x channels)':>40}  {'mode':>18}  {'Numba path':>10}  {'generic':>9}  "
          f"{'generic / Numba':>15}  {'output diff':>11}")
    for name, shape in shapes.items():
        difference = output_difference(shape)
        for mode, seconds in measure_shape(shape, repeats, warmup).items():
            label = f"{name}: {' x '.join(map(str, shape))}"
            print(f"{label:>40}  {mode:>18}  {seconds['numba']:>9.4g}s  {seconds['generic']:>8.4g}s  "
                  f"{seconds['generic'] / seconds['numba']:>14.2f}x  {difference:>11.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
