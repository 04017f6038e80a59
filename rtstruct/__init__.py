"""rtstruct: binary masks on a CT grid <-> DICOM RT Structure Set, to TPS-import quality.

Standalone (pydicom + numpy only). See README.md for the conventions.
"""
from rtstruct.errors import ReferenceMismatchError, RTStructError
from rtstruct.geometry import sort_slices
from rtstruct.reader import read_masks, roi_generation, roi_interpreted_types, roi_names
from rtstruct.writer import RoiMask, write_rtstruct

__all__ = [
    "RTStructError",
    "ReferenceMismatchError",
    "RoiMask",
    "read_masks",
    "roi_generation",
    "roi_interpreted_types",
    "roi_names",
    "sort_slices",
    "write_rtstruct",
]
