"""A header scanner for the C-STORE hot path: single-frame images in explicit VR little endian.

pydicom builds an object for every element of every received slice; on the hot path that was the largest part of
the node's per-instance time (bench/ingest.py). CT slices, the bulk of all traffic, need ~25 flat attributes, so
this module walks the top-level elements of the Part 10 file itself, decodes only those, and checks every declared
length against the file size on the way (truncation). Anything outside its remit (another transfer syntax,
multi-frame, an unusual character set, a malformed structure) raises :class:`Unsupported` and the caller falls back
to pydicom, which stays the reference: tests compare both on the same files.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHARSETS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}

#: tag -> keyword of the attributes the index needs from a single-frame image
WANTED: dict[int, str] = {
    0x00080005: "SpecificCharacterSet", 0x00080008: "ImageType", 0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID", 0x00080020: "StudyDate", 0x00080021: "SeriesDate", 0x00080022: "AcquisitionDate",
    0x00080023: "ContentDate", 0x0008002A: "AcquisitionDateTime", 0x00080032: "AcquisitionTime",
    0x00080033: "ContentTime", 0x00080060: "Modality", 0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription", 0x00100010: "PatientName", 0x00100020: "PatientID",
    0x00100021: "IssuerOfPatientID", 0x00181030: "ProtocolName",
    0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID", 0x00200011: "SeriesNumber",
    0x00200032: "ImagePositionPatient", 0x00200037: "ImageOrientationPatient", 0x00200052: "FrameOfReferenceUID",
    0x00200100: "TemporalPositionIdentifier", 0x00280002: "SamplesPerPixel", 0x00280008: "NumberOfFrames",
    0x00280010: "Rows", 0x00280011: "Columns", 0x00280100: "BitsAllocated",
}
#: sequences the index reads: a file carrying one is left to pydicom (the scanner skips sequences). The
#: radiopharmaceutical (NM, PET) names the tracer and radionuclide that give a series its role.
DECLINED_SEQUENCES = {0x00540016: "RadiopharmaceuticalInformationSequence"}
PIXEL_TAGS = {0x7FE00010: 16, 0x7FE00008: 32, 0x7FE00009: 64}  # tag -> bits per sample (PixelData: BitsAllocated)
_NUMERIC_STRINGS = {b"DS", b"IS"}
_US, _UL = struct.Struct("<H"), struct.Struct("<L")


class Unsupported(Exception):
    """Not for the fast path; use pydicom."""


class Truncated(Exception):
    """A declared length runs past the end of the data (or native pixel data is short)."""


class PixelsTruncated(Truncated):
    """Native pixel data shorter than declared: final even when only a prefix was scanned."""


class NeedMore(Exception):
    """The header runs past the prefix given to scan(); call again with the whole file."""


class ScannedHeader:
    """The wanted attributes, readable like a pydicom Dataset by node.header (get / `in`)."""

    def __init__(self, values: dict[str, Any], pixel_tags: set[int]) -> None:
        self._values = values
        self._pixel_tags = pixel_tags

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._values.get(keyword, default)

    def __contains__(self, key: object) -> bool:
        return key in self._pixel_tags if isinstance(key, int) else key in self._values


def _decode(vr: bytes, raw: bytes, encoding: str) -> Any:
    if vr == b"US":
        return _US.unpack_from(raw)[0] if len(raw) == 2 else list(struct.unpack(f"<{len(raw) // 2}H", raw))
    if vr == b"UL":
        return _UL.unpack_from(raw)[0]
    text = raw.decode(encoding).rstrip("\x00 ")
    if vr in _NUMERIC_STRINGS:
        parts = [p.strip() for p in text.split("\\")]
        try:
            nums = [float(p) if vr == b"DS" else int(p) for p in parts if p]
        except ValueError as exc:
            raise Unsupported(f"bad {vr.decode()} value {text!r}") from exc
        return nums[0] if len(nums) == 1 else nums
    return text.strip()


def _skip_undefined(buf: memoryview, pos: int, end: int, depth: int = 0) -> int:
    """Position after an undefined-length SQ (items of elements, possibly nested) or encapsulated pixel data."""
    if depth > 8:
        raise Unsupported("sequences nested too deep")
    while True:
        if pos + 8 > end:
            raise Truncated("dataset truncated inside a sequence")
        tag = (_US.unpack_from(buf, pos)[0] << 16) | _US.unpack_from(buf, pos + 2)[0]
        length = _UL.unpack_from(buf, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise Unsupported(f"unexpected tag {tag:08X} in a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _skip_item(buf, pos, end, depth + 1)


def _skip_item(buf: memoryview, pos: int, end: int, depth: int) -> int:
    """Walk the elements of an undefined-length item up to its delimiter."""
    while True:
        if pos + 8 > end:
            raise Truncated("dataset truncated inside a sequence item")
        tag = (_US.unpack_from(buf, pos)[0] << 16) | _US.unpack_from(buf, pos + 2)[0]
        if tag == _ITEM_END:
            return pos + 8
        pos, length, _vr = _element_header(buf, pos, end)
        pos = _skip_undefined(buf, pos, end, depth) if length == _UNDEFINED else pos + length


def _element_header(buf: memoryview, pos: int, end: int) -> tuple[int, int, bytes]:
    """(value position, length, VR) of the explicit VR LE element at `pos`."""
    if pos + 8 > end:
        raise Truncated("dataset truncated in an element header")
    vr = bytes(buf[pos + 4:pos + 6])
    if not vr.isalpha() or not vr.isupper():
        raise Unsupported("not explicit VR")
    if vr in _LONG_VRS:
        if pos + 12 > end:
            raise Truncated("dataset truncated in an element header")
        return pos + 12, _UL.unpack_from(buf, pos + 8)[0], vr
    return pos + 8, _US.unpack_from(buf, pos + 6)[0], vr


def scan(data: bytes | memoryview, file_size: int | None = None) -> ScannedHeader:
    """Scan the bytes of a Part 10 file (preamble, meta, explicit VR little endian dataset).

    `data` may be a prefix of a file of `file_size` bytes: native pixel data is then checked against the file
    size without being read. Raises Unsupported (use pydicom instead), Truncated, or NeedMore (prefix too short).
    """
    buf = memoryview(data)
    end = len(buf)
    size = end if file_size is None else file_size
    if size > end:
        return _scan_prefix(buf, end, size)
    return _scan(buf, end, size)


def _scan_prefix(buf: memoryview, end: int, size: int) -> ScannedHeader:
    try:
        return _scan(buf, end, size)
    except PixelsTruncated:
        raise
    except Truncated as exc:  # only the prefix ended: that is not the file ending
        raise NeedMore(str(exc)) from exc


def _scan(buf: memoryview, end: int, size: int) -> ScannedHeader:
    if end < 144 or bytes(buf[128:132]) != b"DICM":
        raise Unsupported("no Part 10 preamble")
    meta_len = _UL.unpack_from(buf, 140)[0]
    pos = 144 + meta_len
    raw: dict[int, tuple[bytes, bytes]] = {}
    pixels: dict[int, int] = {}
    while pos < end:
        vpos, length, vr = _element_header(buf, pos, end)
        tag = (_US.unpack_from(buf, pos)[0] << 16) | _US.unpack_from(buf, pos + 2)[0]
        if tag in PIXEL_TAGS:
            if length == _UNDEFINED:
                _skip_undefined(buf, vpos, end)  # encapsulated: every fragment must be there
                pixels[tag] = _UNDEFINED
            elif vpos + length > size:
                raise PixelsTruncated(
                    f"dataset truncated: pixel data declares {length} bytes, only {size - vpos} received")
            else:
                pixels[tag] = length
            break  # pixel data is last in practice; trailing padding is not needed here
        if tag in DECLINED_SEQUENCES:
            raise Unsupported(f"{DECLINED_SEQUENCES[tag]} is read by pydicom")
        if length == _UNDEFINED:
            if vr not in (b"SQ", b"UN"):
                raise Unsupported("undefined length outside a sequence")
            pos = _skip_undefined(buf, vpos, end)
            continue
        if vpos + length > end:
            raise Truncated(
                f"dataset truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes, "
                f"only {end - vpos} received")
        if tag in WANTED:
            raw[tag] = (vr, bytes(buf[vpos:vpos + length]))
        pos = vpos + length
    charset = raw[0x00080005][1].decode("ascii", "replace").strip(" \x00") if 0x00080005 in raw else ""
    encoding = _CHARSETS.get(charset)
    if encoding is None:
        raise Unsupported(f"character set {charset!r}")
    values = {WANTED[t]: _decode(vr, v, encoding) for t, (vr, v) in raw.items()}
    if int(values.get("NumberOfFrames") or 1) != 1:
        raise Unsupported("multi-frame")
    check_pixel_lengths(values.get, pixels)
    return ScannedHeader(values, set(pixels))


def check_pixel_lengths(get: Callable[..., Any], lengths: dict[int, int]) -> None:
    """Native pixel data (tag -> declared length) must hold every pixel the header announces.

    `get(keyword, default)` reads the header (a dict's or a pydicom Dataset's get). Raises PixelsTruncated.
    """
    try:
        n = (int(get("Rows")) * int(get("Columns")) * int(get("SamplesPerPixel") or 1)
             * int(get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return  # missing geometry is reported elsewhere (or is an odd object)
    for tag, length in lengths.items():
        if length == _UNDEFINED:
            continue
        bits = int(get("BitsAllocated") or 16) if tag == 0x7FE00010 else PIXEL_TAGS[tag]
        expected = (n * bits + 7) // 8
        if length < expected:
            raise PixelsTruncated(
                f"pixel data truncated: {length} bytes for {n} pixels of {bits} bits ({expected} needed)")
