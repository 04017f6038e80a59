"""The hot-path header scanner agrees with pydicom (the reference) and refuses what pydicom would refuse."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from node import fastheader
from node.header import InvalidInstanceError, read_header

import factories as F


def _both(path: Path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ts = str(ds.file_meta.TransferSyntaxUID)
    reference = read_header(path)  # no SOP class given: always pydicom
    fast = read_header(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), ts)
    return reference, fast


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("fast")
    plain = F.write(F.ct_series("P-FAST", 3, time_points=2), d / "plain")
    odd = F.ct_series("P-FAST", 1)[0]
    odd.SpecificCharacterSet = "ISO_IR 100"
    odd.PatientName = "Müller^Jürgen"
    odd.ImageType = ["DERIVED", "SECONDARY"]
    odd.ReferencedImageSequence = pydicom.Sequence([pydicom.Dataset()])  # a sequence before the pixels
    odd.ReferencedImageSequence[0].ReferencedSOPClassUID = F.CT
    odd.ReferencedImageSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    extra = F.write([odd], d / "odd")
    j2k = F.write([F.jpeg2000(pydicom.dcmread(plain[0]))], d / "j2k")
    jpll = [F.jpeg_lossless_file(plain[1], d / "jpll.dcm")]
    return plain + extra + j2k + jpll


def test_fast_scanner_matches_pydicom(ct_files: list[Path]) -> None:
    for path in ct_files:
        reference, fast = _both(path)
        assert fast == reference, path


def test_scanner_is_used_for_ct_and_declines_other_input(ct_files: list[Path]) -> None:
    assert isinstance(fastheader.scan(ct_files[0].read_bytes()), fastheader.ScannedHeader)
    nm = F.nm_multiframe("P-FAST")
    (nm_path,) = F.write([nm], ct_files[0].parent.parent / "nm")
    with pytest.raises(fastheader.Unsupported):
        fastheader.scan(nm_path.read_bytes())  # multi-frame: pydicom's job
    ds = pydicom.dcmread(ct_files[0])
    ds.SpecificCharacterSet = "ISO_IR 87"
    (jis,) = F.write([ds], ct_files[0].parent.parent / "jis")
    with pytest.raises(fastheader.Unsupported):
        fastheader.scan(jis.read_bytes())


@pytest.mark.parametrize("cut", [10, 3000, 8100, 9000])
def test_truncation_is_refused_by_both(ct_files: list[Path], tmp_path: Path, cut: int) -> None:
    for src in (ct_files[0], ct_files[-2]):  # native and JPEG 2000 (encapsulated) pixel data
        raw = src.read_bytes()
        cut_file = tmp_path / f"cut{cut}-{src.name}"
        cut_file.write_bytes(raw[: len(raw) - cut])
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        calls: list[dict[str, Any]] = [{}, {"expected_sop_class": str(ds.SOPClassUID),
                                            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID)}]
        for kwargs in calls:
            with pytest.raises(InvalidInstanceError):  # 0xC000 or 0xA900, never stored
                read_header(cut_file, **kwargs)
