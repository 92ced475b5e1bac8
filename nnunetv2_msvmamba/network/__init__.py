"""The MSV-Mamba network: residual encoder, dual-attention skip fusion, LMS decoder. Depends on `ssm` only."""
from .fusion import DualAttentionSkipFusion
from .lms import LMSBlock
from .model import MSVMambaDecoder, MSVMambaUNet

__all__ = ["DualAttentionSkipFusion", "LMSBlock", "MSVMambaDecoder", "MSVMambaUNet"]
