"""Modules that nnU-Net imports by file when nnUNet_extTrainer points at this folder."""
