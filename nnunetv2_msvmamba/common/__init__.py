"""Helpers shared by the package's commands and the dataset converters: one-line input errors, atomic
outputs, parallel work with a progress bar, CSV writing. No nnU-Net or PyTorch imports."""
