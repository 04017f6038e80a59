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

#: The transfer syntaxes the node has always accepted (and the only ones with ``[receive] strict = true``):
#: uncompressed, Deflate, RLE, JPEG (lossless and lossy), JPEG-LS, JPEG 2000. Stored as received, no transcoding.
STRICT_TRANSFER_SYNTAXES: list[str] = [
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

#: Also accepted by the tolerant policy (the default), stored as received: newer or rarer encapsulated pixel
#: encodings (PS3.5 Table A-1) whose data set is explicit VR little endian, so the header can be read whether or
#: not the node has a decoder for the pixels (an image it cannot decode is marked unusable, not refused).
TOLERANT_EXTRA_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Lossless",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.92": "JPEG 2000 Part 2 Multi-component Lossless",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2 Multi-component",
    "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
    "1.2.840.10008.1.2.4.101": "MPEG2 Main Profile / High Level",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.104": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
    "1.2.840.10008.1.2.4.105": "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
    "1.2.840.10008.1.2.4.106": "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
    "1.2.840.10008.1.2.4.107": "HEVC/H.265 Main Profile / Level 5.1",
    "1.2.840.10008.1.2.4.108": "HEVC/H.265 Main 10 Profile / Level 5.1",
}

TOLERANT_TRANSFER_SYNTAXES: list[str] = STRICT_TRANSFER_SYNTAXES + list(TOLERANT_EXTRA_TRANSFER_SYNTAXES)

#: Kept for callers that mean "what the node accepts by default".
TRANSFER_SYNTAXES = TOLERANT_TRANSFER_SYNTAXES


def transfer_syntaxes(strict: bool) -> list[str]:
    """The transfer syntaxes offered to senders under the receive policy."""
    return STRICT_TRANSFER_SYNTAXES if strict else TOLERANT_TRANSFER_SYNTAXES


_STORAGE_BRANCH = "1.2.840.10008.5.1.4.1.1."  # PS3.4 storage SOP classes (and those newer than pynetdicom)
_DICOM_ROOT = "1.2.840.10008."


def may_be_storage_sop_class(uid: str) -> bool:
    """Could an abstract syntax the node does not know be a storage SOP class? True for the standard storage
    branch (a class newer than our tables) and for private (vendor) UIDs; False for other standard services
    (query/retrieve, worklist, print, ...), which the node does not provide."""
    if not uid or len(uid) > 64 or not all(part.isdigit() for part in uid.split(".")):
        return False
    return uid.startswith(_STORAGE_BRANCH) or not uid.startswith(_DICOM_ROOT)


#: SOP classes the node creates, per output kind (routing key): the SCU side of the conformance statement.
#: parametric-map includes Secondary Capture for the fallback rendition sent to peers refusing Parametric Map;
#: report includes the MAA regions structure set and the Y-90 dose (RT Dose with the beamless RT Plan it references),
#: which go with the case report to the PACS, and the summary's Encapsulated PDF; rtdose (declared by the MAA
#: workflow) is that dose with its plan and the structure set its DVHs refer to, for a TPS.
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
OUTPUT_SOP_CLASSES: dict[str, tuple[str, ...]] = {
    "parametric-map": ("1.2.840.10008.5.1.4.1.1.30", SECONDARY_CAPTURE),
    "secondary-capture": (SECONDARY_CAPTURE,),
    "report": (COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE, RT_STRUCTURE_SET, RT_DOSE, RT_PLAN, ENCAPSULATED_PDF),
    "rtstruct": (RT_STRUCTURE_SET,),
    "rtdose": (RT_DOSE, RT_PLAN, RT_STRUCTURE_SET),
}
