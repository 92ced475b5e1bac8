"""nnU-Net plans for the network and trainer tests: the architecture sections nnU-Net 2.8 writes for a small
2D dataset with the default planner and with nnUNetPlannerResEncM, and for a small 3D one."""
from __future__ import annotations

import copy

_NORM_2D = "torch.nn.modules.instancenorm.InstanceNorm2d"
_NORM_3D = "torch.nn.modules.instancenorm.InstanceNorm3d"
_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _arch(network_class: str, dims: int, n_stages: int, features: list, blocks_key: str, blocks: list) -> dict:
    return {
        "network_class_name": network_class,
        "arch_kwargs": {
            "n_stages": n_stages, "features_per_stage": features,
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": [[3] * dims] * n_stages,
            "strides": [[1] * dims] + [[2] * dims] * (n_stages - 1),
            blocks_key: blocks, "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
            "norm_op": _NORM_2D if dims == 2 else _NORM_3D, "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": _IMPORTS,
    }


PLAIN_2D = _arch("dynamic_network_architectures.architectures.unet.PlainConvUNet", 2, 4, [8, 16, 32, 32],
                 "n_conv_per_stage", [1, 1, 1, 1])
RESENC_2D = _arch("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", 2, 4, [8, 16, 32, 32],
                  "n_blocks_per_stage", [1, 2, 2, 2])
PLAIN_3D = _arch("dynamic_network_architectures.architectures.unet.PlainConvUNet", 3, 3, [8, 16, 16],
                 "n_conv_per_stage", [1, 1, 1])


def plans(architecture: dict, configuration: str = "2d", patch_size=(64, 64)) -> dict:
    """A whole plans dict (as nnUNetv2_plan_experiment writes it) around one architecture section."""
    dims = len(patch_size)
    return {
        "dataset_name": "Dataset999_Toy", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * dims, "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(range(dims)),
        "transpose_backward": list(range(dims)),
        "configurations": {configuration: {
            "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
            "spacing": [1.0] * dims, "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": copy.deepcopy(architecture), "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
            "percentile_99_5": 1.0, "std": 1.0}},
    }


DATASET_JSON = {"channel_names": {"0": "US"}, "labels": {"background": 0, "LV_cavity": 1, "LV_myocardium": 2},
                "numTraining": 4, "file_ending": ".nii.gz"}
