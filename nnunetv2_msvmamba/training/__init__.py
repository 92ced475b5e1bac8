"""nnUNetTrainerMSVMamba and its variants, found by the stock nnU-Net commands through nnUNet_extTrainer
(`eval "$(msvmamba_env)"`). The only part of this package that imports nnU-Net's trainer."""
