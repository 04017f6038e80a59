"""liver-node: an unattended DICOM node for liver-directed cancer therapy."""
__version__ = "0.1.0"
