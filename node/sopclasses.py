"""SOP classes and transfer syntaxes the node accepts, named after PS3.4 / PS3.5."""
from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

#: Image storage SOP classes: a C-STORE of one of these must carry pixel data.
IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "NM Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
}

#: Non-image storage SOP classes the node keeps (structures, plans and doses, reports, registrations). An RT Dose
#: is not an image class here: it may carry DVHs or point doses without a dose grid (PS3.3 C.8.8.3).
NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
}

STORAGE_SOP_CLASSES: dict[str, str] = {**IMAGE_SOP_CLASSES, **NON_IMAGE_SOP_CLASSES}

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
NM_IMAGE = "1.2.840.10008.5.1.4.1.1.20"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

#: Accepted as received (no transcoding): uncompressed, Deflate, RLE, JPEG (lossless and lossy), JPEG-LS, JPEG 2000.
TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
]

#: SOP classes the node creates, per output kind (routing key): the SCU side of the conformance statement.
#: parametric-map includes Secondary Capture for the fallback rendition sent to peers refusing Parametric Map;
#: report includes the MAA regions structure set and the Y-90 dose (RT Dose with the beamless RT Plan it references),
#: which go with the case report to the PACS; rtdose (declared by the MAA workflow) is that dose with its plan and
#: the structure set its DVHs refer to, for a TPS.
OUTPUT_SOP_CLASSES: dict[str, tuple[str, ...]] = {
    "parametric-map": ("1.2.840.10008.5.1.4.1.1.30", SECONDARY_CAPTURE),
    "secondary-capture": (SECONDARY_CAPTURE,),
    "report": (COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE, RT_STRUCTURE_SET, RT_DOSE, RT_PLAN),
    "rtstruct": (RT_STRUCTURE_SET,),
    "rtdose": (RT_DOSE, RT_PLAN, RT_STRUCTURE_SET),
}
