"""What the tests share besides pytest fixtures: data makers, nnU-Net folders and commands, subprocess helpers."""
