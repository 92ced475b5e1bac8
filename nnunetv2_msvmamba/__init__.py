"""nnU-Net v2 extension plugin: the MSV-Mamba echocardiography segmentation network."""
__version__ = "0.1.0"
