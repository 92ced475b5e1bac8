"""nnUNetTrainerMSVMamba and its variants, found by the stock nnU-Net commands through nnUNet_extTrainer (set at
interpreter start by the installed package, or by `eval "$(msvmamba_env)"`). The only part of this package that
imports nnU-Net's trainer."""
