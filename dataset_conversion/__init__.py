"""Converters from the public echocardiography datasets (CAMUS, EchoNet-Dynamic) to nnU-Net raw datasets."""
