"""Whole-video inference (`msvmamba_predict_video`): every frame of an echo loop through nnU-Net's own
nnUNetPredictor, the label sequence, its cardiac analysis (nnunetv2_msvmamba.clinical) and an overlay video."""
