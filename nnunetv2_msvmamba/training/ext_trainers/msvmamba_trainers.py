"""Shim for nnU-Net's external-trainer search (`nnUNet_extTrainer` points at this folder): nnU-Net imports the
modules here by file, and this one hands it the trainers that live in the installed package."""
from nnunetv2_msvmamba.training.trainers import *  # noqa: F401,F403
