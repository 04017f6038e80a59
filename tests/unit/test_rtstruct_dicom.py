"""RTSTRUCT conformance for TPS import: dciodvfy, DS lengths, contour hygiene, references, errors, slice order."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from test_rtstruct_roundtrip import FFS, HFS, NONUNIFORM_Z, make_ct, phantom_masks

import rtstruct

RETIRED_DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[list[Dataset], Path, dict[str, np.ndarray]]:
    """A CT with non-uniform, 3-decimal slice positions and an RTSTRUCT of the phantom, written to disk."""
    ct = make_ct(NONUNIFORM_Z, orientation=HFS, spacing=(0.8, 1.1))
    masks = phantom_masks(rtstruct.sort_slices(ct))
    rois = [rtstruct.RoiMask(name, mask, interpreted_type=kind, color=(0, 128, 255), description=f"test {name}")
            for (name, mask), kind in zip(masks.items(), ("ORGAN", "CTV", "PTV", "AVOIDANCE"), strict=False)]
    rtss = rtstruct.write_rtstruct(ct, rois, structure_set_label="LIVER TEST", series_description="rtstruct test",
                                   operators_name="Op^Erator", software_versions="1.0")
    path = tmp_path_factory.mktemp("rtss") / "rtss.dcm"
    pydicom.dcmwrite(path, rtss, enforce_file_format=True)
    return ct, path, masks


def contours_of(rtss: Dataset):
    for roi in rtss.ROIContourSequence:
        yield from roi.get("ContourSequence", [])


def test_dciodvfy_reports_no_errors(written) -> None:
    exe = shutil.which("dciodvfy")
    assert exe, "dciodvfy (dicom3tools) is required (scripts/install-test-tools.sh)"
    run = subprocess.run([exe, str(written[1])], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "RTStructureSet" in output  # dciodvfy recognised the IOD
    errors = [line for line in output.splitlines() if "Error" in line]
    assert not errors, "\n".join(errors)


def _walk(ds: Dataset):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)
        else:
            yield elem


def test_ds_values_are_short_and_contour_data_fits(written) -> None:
    rtss = pydicom.dcmread(written[1])
    ds_texts = [str(v) for elem in _walk(rtss) if elem.VR == "DS"
                for v in (elem.value if elem.VM > 1 else [elem.value])]
    assert ds_texts and max(len(t) for t in ds_texts) <= 16
    for contour in contours_of(rtss):
        assert len("\\".join(str(v) for v in contour.ContourData)) <= 65534
        assert len(contour.ContourData) == 3 * int(contour.NumberOfContourPoints)


def test_contours_are_clean_voxel_edge_polygons_on_their_slice(written) -> None:
    ct, path, masks = written
    rtss = pydicom.dcmread(path)
    by_uid = {ds.SOPInstanceUID: ds for ds in ct}
    n = 0
    for contour in contours_of(rtss):
        n += 1
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        (ref,) = contour.ContourImageSequence
        ct_slice = by_uid[ref.ReferencedSOPInstanceUID]  # references a slice of this CT
        assert ref.ReferencedSOPClassUID == ct_slice.SOPClassUID
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        assert len(points) >= 3
        step = np.roll(points, -1, axis=0) - points
        assert np.all(np.abs(step).sum(axis=1) > 0), "duplicate consecutive points"
        turn = np.cross(step, np.roll(step, -1, axis=0))
        assert np.all(np.linalg.norm(turn, axis=1) > 1e-9), "collinear points"
        # On the referenced slice's plane, exactly: z is the slice's own ImagePositionPatient.
        ipp = np.asarray(ct_slice.ImagePositionPatient, dtype=float)
        iop = np.asarray(ct_slice.ImageOrientationPatient, dtype=float)
        assert np.all((points - ipp) @ np.cross(iop[:3], iop[3:]) == 0.0)
        # Vertices on voxel corners (half-integer pixel indices, to the 0.01 mm rounding).
        d_row, d_col = (float(v) for v in ct_slice.PixelSpacing)
        pixel = np.column_stack([(points - ipp) @ iop[3:] / d_row, (points - ipp) @ iop[:3] / d_col])
        assert np.allclose(pixel + 0.5, np.round(pixel + 0.5), atol=0.02)
    assert n > len(masks)


def test_references_type2_and_labels(written) -> None:
    ct, path, masks = written
    rtss = pydicom.dcmread(path)
    first = ct[0]
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        assert rtss[kw].value == first[kw].value, kw
    for kw in ("OperatorsName", "SeriesNumber", "Manufacturer", "StructureSetDate", "StructureSetTime"):
        assert kw in rtss, kw
    assert rtss.Modality == "RTSTRUCT" and rtss.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert rtss.file_meta.MediaStorageSOPInstanceUID == rtss.SOPInstanceUID
    assert rtss.StructureSetLabel == "LIVER TEST" and len(rtss.StructureSetLabel) <= 16
    assert rtss.SeriesInstanceUID != first.SeriesInstanceUID

    (frame,) = rtss.ReferencedFrameOfReferenceSequence  # one frame of reference
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    assert study.ReferencedSOPClassUID != RETIRED_DETACHED_STUDY_MANAGEMENT
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    listed = [ref.ReferencedSOPInstanceUID for ref in series.ContourImageSequence]
    assert sorted(listed) == sorted(ds.SOPInstanceUID for ds in ct)  # every CT slice, once

    names = rtstruct.roi_names(rtss)
    assert names == list(masks)
    for item in rtss.StructureSetROISequence:
        assert item.ROIGenerationAlgorithm == "AUTOMATIC"
        assert item.ReferencedFrameOfReferenceUID == first.FrameOfReferenceUID
    kinds = [obs.RTROIInterpretedType for obs in rtss.RTROIObservationsSequence]
    assert kinds == ["ORGAN", "CTV", "PTV", "AVOIDANCE"]
    assert all("ROIInterpreter" in obs for obs in rtss.RTROIObservationsSequence)
    assert [list(roi.ROIDisplayColor) for roi in rtss.ROIContourSequence] == [[0, 128, 255]] * len(masks)


def test_read_masks_selects_names(written) -> None:
    ct, path, masks = written
    rtss = pydicom.dcmread(path)
    got = rtstruct.read_masks(rtss, ct, names=["Thin"])
    assert list(got) == ["Thin"] and np.array_equal(got["Thin"], masks["Thin"])
    with pytest.raises(rtstruct.RTStructError, match="Liver"):
        rtstruct.read_masks(rtss, ct, names=["Liver"])


def test_reference_mismatch_for_another_ct(written) -> None:
    ct, path, _ = written
    rtss = pydicom.dcmread(path)
    other = make_ct(NONUNIFORM_Z, orientation=HFS, spacing=(0.8, 1.1))  # new frame of reference
    with pytest.raises(rtstruct.ReferenceMismatchError, match="frame"):
        rtstruct.read_masks(rtss, other)
    # Same frame of reference and geometry, but other images (e.g. another reconstruction): still refused.
    same_frame = make_ct(NONUNIFORM_Z, orientation=HFS, spacing=(0.8, 1.1), frame_uid=ct[0].FrameOfReferenceUID)
    with pytest.raises(rtstruct.ReferenceMismatchError, match="not among"):
        rtstruct.read_masks(rtss, same_frame)
    # A subset of the CT is not the CT the structure set was drawn on either.
    with pytest.raises(rtstruct.ReferenceMismatchError):
        rtstruct.read_masks(rtss, ct[:-1])
    assert issubclass(rtstruct.ReferenceMismatchError, rtstruct.RTStructError)


def test_contour_between_slices_is_refused(written) -> None:
    ct, path, _ = written
    rtss = pydicom.dcmread(path)
    contour = rtss.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    z = float(points[0, 2])
    gap = min(abs(z - other) for other in NONUNIFORM_Z if other != z)
    points[:, 2] += 0.45 * gap  # still nearest to its own slice, but well off its plane
    contour.ContourData = [f"{v:.2f}" for v in points.ravel()]
    with pytest.raises(rtstruct.ReferenceMismatchError, match="not on a CT slice plane"):
        rtstruct.read_masks(rtss, ct)


def test_sort_slices_uses_image_position_along_the_normal() -> None:
    head_first = rtstruct.sort_slices(make_ct([5.0, -2.5, 0.0, 12.0, 7.5], orientation=HFS, seed=3))
    assert [float(ds.ImagePositionPatient[2]) for ds in head_first] == [-2.5, 0.0, 5.0, 7.5, 12.0]
    # Feet first: normal (-1,0,0) x (0,1,0) = -z, so ascending along the normal is descending z.
    feet_first = rtstruct.sort_slices(make_ct([5.0, -2.5, 0.0, 12.0, 7.5], orientation=FFS, seed=4))
    assert [float(ds.ImagePositionPatient[2]) for ds in feet_first] == [12.0, 7.5, 5.0, 0.0, -2.5]


def test_sort_slices_refuses_inconsistent_series() -> None:
    ct = make_ct([0.0, 2.5, 5.0])
    ct[1].FrameOfReferenceUID = generate_uid()
    with pytest.raises(rtstruct.RTStructError, match="frames of reference"):
        rtstruct.sort_slices(ct)
    repeated = make_ct([0.0, 2.5, 2.5])  # a time series, not a volume
    with pytest.raises(rtstruct.RTStructError, match="same position|share one position"):
        rtstruct.sort_slices(repeated)
    with pytest.raises(rtstruct.RTStructError):
        rtstruct.sort_slices([])


def test_writer_rejects_bad_input() -> None:
    ct = make_ct([0.0, 2.5, 5.0])
    good = np.zeros((3, 64, 64), dtype=bool)
    good[1, 10:20, 10:20] = True
    with pytest.raises(ValueError, match="shape"):
        rtstruct.write_rtstruct(ct, [rtstruct.RoiMask("Liver", good[:2])])
    with pytest.raises(ValueError, match="name"):
        rtstruct.RoiMask("  ", good)
    with pytest.raises(ValueError, match="unique"):
        rtstruct.write_rtstruct(ct, [rtstruct.RoiMask("Liver", good), rtstruct.RoiMask("Liver", good)])
    with pytest.raises(ValueError, match="structure_set_label"):
        rtstruct.write_rtstruct(ct, [rtstruct.RoiMask("Liver", good)], structure_set_label="X" * 17)
    with pytest.raises(ValueError, match="boolean"):
        rtstruct.write_rtstruct(ct, [rtstruct.RoiMask("Liver", good * 0.5)])
    with pytest.raises(ValueError, match="no ROIs"):
        rtstruct.write_rtstruct(ct, [])
