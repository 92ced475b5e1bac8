"""The MSV-Mamba network: residual encoder, dual-attention skip fusion, LMS decoder. Depends on `ssm` only."""
from .fusion import DualAttentionSkipFusion
from .lms import LMSBlock
from .model import MSVMambaDecoder, MSVMambaUNet, decoder_output_sizes, lms_stages_within

__all__ = ["DualAttentionSkipFusion", "LMSBlock", "MSVMambaDecoder", "MSVMambaUNet", "decoder_output_sizes",
           "lms_stages_within"]
