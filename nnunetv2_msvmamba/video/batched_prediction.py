"""Whole loops through a trained nnU-Net model at the network's speed: nnU-Net's own pieces, arranged for many
small images instead of one large one.

`nnUNetPredictor.predict_single_npy_array` once per frame reloads the weights of every fold (its
`predict_logits_from_preprocessed_data` calls `load_state_dict` on each call), sets up a sliding window (buffers,
a worker thread) and runs one tile per forward pass. Here:
  * each fold's network is built and loaded once, when the predictor is made;
  * frames go through the plans' own preprocessor (`DefaultPreprocessor.run_case_npy`: cropping to the non-zero
    box, normalisation, resampling to the model's spacing), as `predict_single_npy_array` does, in a background
    thread so that the next frames are ready when the network is;
  * every frame is padded (`pad_nd_image`) and cut into tiles with nnU-Net's own sliding-window slicers; the tiles
    of several frames (one each when a frame fits one patch) go through the network together, `batch_size` per
    forward pass, test-time mirrored copies in the same batch, averaged in nnU-Net's order;
  * each tile is weighted by nnU-Net's Gaussian and accumulated into a float16 buffer exactly as
    `_internal_predict_sliding_window_return_logits` does (so a one-tile frame's logits are those of nnU-Net to the
    last float16 bit for the same network output), folds summed in float16 and divided as
    `predict_logits_from_preprocessed_data` does;
  * the logits go back to each frame's grid through nnU-Net's
    `convert_predicted_logits_to_segmentation_with_correct_shape`.
The only difference from nnUNetv2_predict is the batched network itself: a convolution over a batch may round
differently from the same convolution over one image, which changes a label only where two classes are within
rounding of each other (tests/e2e/test_video_batched.py measures it)."""
from __future__ import annotations

import copy
import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .predict import PIXEL_SPACING_WITHOUT_HEADER, SLICE_AXIS_SPACING

# Frames (one tile each) per forward pass when --batch-size is not given. CPU: on a 2-core CPU with 112x112 EchoNet
# frames, batch 8 was the fastest of 2, 4, 8 and 16 (bench_video.py --batch-sizes; docs/benchmarks.md). GPU: not
# measured yet (benchmarks/bench_video.py in gpu_check.sh will); a GPU needs far larger batches to be kept busy.
DEFAULT_BATCH_SIZE = {"cpu": 8, "mps": 16, "cuda": 64}
PREFETCHED_BATCHES = 2  # preprocessed frames kept ready ahead of the network, in batches


def default_batch_size(device: torch.device | str) -> int:
    """Frames per forward pass for a device type (see DEFAULT_BATCH_SIZE)."""
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cpu"])


@dataclass
class PreprocessedFrame:
    """One frame as the network sees it: normalised, resampled, padded to at least one patch."""
    data: torch.Tensor  # (channels, 1, rows, columns) after padding
    revert_padding: tuple  # nnU-Net's slicer that removes the padding again
    properties: dict  # nnU-Net's preprocessing properties (cropping box, shapes), for the export
    tiles: list  # nnU-Net's sliding-window slicers over `data`


class BatchedFramePredictor:
    """Frames of echo loops through an initialised `nnUNetPredictor`, many per forward pass, each fold's weights
    loaded once. The predictor's settings apply: device, mirroring (TTA), Gaussian weighting, tile step size,
    folds, perform_everything_on_device."""

    def __init__(self, predictor, batch_size: Optional[int] = None):
        if predictor.network is None:
            raise ValueError("initialise the nnUNetPredictor (initialize_from_trained_model_folder) first")
        self.predictor = predictor
        self.device: torch.device = predictor.device
        self.batch_size = batch_size or default_batch_size(self.device)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        self.patch_size = tuple(predictor.configuration_manager.patch_size)
        self.networks = fold_networks(predictor)
        # where nnU-Net keeps the logits while it sums the tiles: on the GPU with perform_everything_on_device
        self.results_device = self.device if predictor.perform_everything_on_device else torch.device("cpu")
        self.gaussian = self.tile_weights()
        self.mirror_axes = mirror_axis_combinations(predictor)
        self.preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)

    def tile_weights(self) -> Optional[torch.Tensor]:
        if not self.predictor.use_gaussian:
            return None
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian
        return compute_gaussian(self.patch_size, sigma_scale=1. / 8, value_scaling_factor=10,
                                device=self.results_device)

    # ------------------------------------------------------------------------------------------ preprocessing

    def preprocess(self, frame: np.ndarray, spacing_rc: Optional[tuple[float, float]]) -> PreprocessedFrame:
        """One (rows, columns) frame as `predict_single_npy_array` would preprocess it as a 2D image."""
        from acvl_utils.cropping_and_padding.padding import pad_nd_image
        predictor = self.predictor
        spacing = [SLICE_AXIS_SPACING, *(spacing_rc or (PIXEL_SPACING_WITHOUT_HEADER,) * 2)]
        image = frame[np.newaxis, np.newaxis].astype(np.float32)  # (channel, slice, rows, columns)
        data, _, properties = self.preprocessor.run_case_npy(image, None, {"spacing": spacing},
                                                             predictor.plans_manager,
                                                             predictor.configuration_manager,
                                                             predictor.dataset_json)
        data = torch.from_numpy(data)
        padded, revert_padding = pad_nd_image(data, self.patch_size, "constant", {"value": 0}, True, None)
        if self.device.type == "cuda":
            padded = padded.pin_memory()  # so that the copy to the GPU runs asynchronously
        tiles = predictor._internal_get_sliding_window_slicers(padded.shape[1:])
        return PreprocessedFrame(padded, revert_padding, properties, tiles)

    def preprocessed_chunks(self, frames: np.ndarray, spacing_rc: Optional[tuple[float, float]]
                            ) -> Iterator[list[PreprocessedFrame]]:
        """The frames preprocessed in a background thread, handed out `batch_size` at a time."""
        ready: queue.Queue = queue.Queue(maxsize=PREFETCHED_BATCHES * self.batch_size)
        stop = threading.Event()

        def produce() -> None:
            try:
                for frame in frames:
                    if stop.is_set():
                        return
                    ready.put(self.preprocess(frame, spacing_rc))
                ready.put(None)
            except BaseException as error:  # handed to the consumer, which raises it
                ready.put(error)

        worker = threading.Thread(target=produce, daemon=True, name="frame-preprocessing")
        worker.start()
        try:
            chunk: list[PreprocessedFrame] = []
            while True:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    break
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        finally:
            stop.set()
            while worker.is_alive():  # unblocks a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(0.05)

    # ------------------------------------------------------------------------------------------ network

    @torch.inference_mode()
    def mirrored_forward(self, network: torch.nn.Module, tiles: torch.Tensor) -> torch.Tensor:
        """nnU-Net's `_internal_maybe_mirror_and_predict` for a batch of tiles, the mirrored copies in the same
        forward pass: the plain prediction plus each mirrored one flipped back, divided by their number."""
        batch = [tiles] + [torch.flip(tiles, axes) for axes in self.mirror_axes]
        output = network(torch.cat(batch) if len(batch) > 1 else tiles)
        copies = output.split(len(tiles))
        prediction = copies[0]
        for axes, mirrored in zip(self.mirror_axes, copies[1:]):
            prediction += torch.flip(mirrored, axes)
        if self.mirror_axes:
            prediction /= (len(self.mirror_axes) + 1)
        return prediction

    @torch.inference_mode()
    def sliding_window_logits(self, network: torch.nn.Module, chunk: Sequence[PreprocessedFrame]
                              ) -> list[torch.Tensor]:
        """Each frame's logits from one fold's network (float16, on the CPU, padding removed), the tiles of all
        frames batched, each tile weighted and accumulated as nnU-Net's sliding window does."""
        classes = self.predictor.label_manager.num_segmentation_heads
        summed = [torch.zeros((classes, *frame.data.shape[1:]), dtype=torch.half, device=self.results_device)
                  for frame in chunk]
        weights = [torch.zeros(frame.data.shape[1:], dtype=torch.half, device=self.results_device)
                   for frame in chunk]
        tiles = [(index, slicer) for index, frame in enumerate(chunk) for slicer in frame.tiles]
        for start in range(0, len(tiles), self.batch_size):
            batch = tiles[start:start + self.batch_size]
            inputs = torch.stack([chunk[index].data[slicer] for index, slicer in batch])
            inputs = inputs.to(self.device, non_blocking=True)
            with self.autocast():
                predictions = self.mirrored_forward(network, inputs).to(self.results_device)
            for (index, slicer), prediction in zip(batch, predictions):
                if self.gaussian is not None:
                    prediction *= self.gaussian
                summed[index][slicer] += prediction
                weights[index][slicer[1:]] += 1 if self.gaussian is None else self.gaussian
        logits = []
        for frame, frame_logits, frame_weights in zip(chunk, summed, weights):
            torch.div(frame_logits, frame_weights, out=frame_logits)
            if torch.any(torch.isinf(frame_logits)):
                raise RuntimeError("Encountered inf in predicted array (as nnU-Net's sliding window checks)")
            logits.append(frame_logits[(slice(None), *frame.revert_padding[1:])].to("cpu"))
        return logits

    def autocast(self):
        # nnU-Net predicts under autocast on CUDA only (on a CPU it is slow, on MPS unsupported)
        if self.device.type == "cuda":
            return torch.autocast("cuda", enabled=True)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def ensemble_logits(self, chunk: Sequence[PreprocessedFrame]) -> list[torch.Tensor]:
        """The folds' logits summed (float16, as nnU-Net sums them on the CPU) and divided by their number."""
        total: Optional[list[torch.Tensor]] = None
        for network in self.networks:
            logits = self.sliding_window_logits(network, chunk)
            if total is None:
                total = logits
            else:
                for running, fold in zip(total, logits):
                    running += fold
        if len(self.networks) > 1:
            for running in total:
                running /= len(self.networks)
        return total

    # ------------------------------------------------------------------------------------------ export

    def export(self, logits: torch.Tensor, properties: dict) -> np.ndarray:
        """Labels on the frame's own grid, (rows, columns), by nnU-Net's export."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        predictor = self.predictor
        labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, properties)
        return labels[0]

    def predict_frames(self, frames: np.ndarray, spacing_rc: Optional[tuple[float, float]],
                       frames_done: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """The label map of every frame of `frames` (frames, rows, columns): (frames, rows, columns) uint8.
        `frames_done(n)` is called after each batch with the number of frames it finished."""
        labels = np.empty(frames.shape, np.uint8)
        finished = 0
        for chunk in self.preprocessed_chunks(frames, spacing_rc):
            for frame, logits in zip(chunk, self.ensemble_logits(chunk)):
                labels[finished] = self.export(logits, frame.properties)
                finished += 1
            if frames_done is not None:
                frames_done(len(chunk))
        return labels


def fold_networks(predictor) -> list[torch.nn.Module]:
    """One network per fold with that fold's weights, on the predictor's device in eval mode: the predictor's own
    network for the first fold, deep copies for the others (torch.compile'd again where the predictor's was)."""
    from torch._dynamo import OptimizedModule
    compiled = isinstance(predictor.network, OptimizedModule)
    base = predictor.network._orig_mod if compiled else predictor.network
    networks = []
    for index, parameters in enumerate(predictor.list_of_parameters):
        network = base if index == 0 else copy.deepcopy(base)
        network.load_state_dict(parameters)
        network = network.to(predictor.device).eval()
        networks.append(torch.compile(network) if compiled else network)
    return networks


def mirror_axis_combinations(predictor) -> list[tuple[int, ...]]:
    """The axes (of a batch of 2D tiles) each mirrored copy is flipped along, in nnU-Net's order; none without
    TTA."""
    if not predictor.use_mirroring or predictor.allowed_mirroring_axes is None:
        return []
    axes = [axis + 2 for axis in predictor.allowed_mirroring_axes]
    return [combination for count in range(len(axes)) for combination in itertools.combinations(axes, count + 1)]

