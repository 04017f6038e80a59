"""Digital liver phantom: one synthetic patient as DICOM (CT perfusion, planning CT + RTSTRUCT, GSA and MAA
SPECT/CT) with independently verifiable ground truth. See README.md in this package."""
from node.phantom.build import write_phantom
from node.phantom.variants import VARIANTS, PhantomError

__all__ = ["VARIANTS", "PhantomError", "write_phantom"]
