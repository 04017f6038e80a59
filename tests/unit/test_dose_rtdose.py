"""RT Dose encoding and decoding: round trips over orientations and bit depths, every grid form the standard
allows on reading, resampling onto a CT grid, refusals, and dciodvfy on what the node writes."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid

import rtstruct
from node.dose.dvh import region_dvh
from node.dose.errors import DoseInputError
from node.dose.rtdose import build_rt_dose, build_rt_plan, dose_on_grid, read_rt_dose
from testpeers.orthanc import dciodvfy_errors


def ct_slices(n: int = 12, rows: int = 40, cols: int = 48, spacing=(3.0, 3.0, 4.0)) -> list[Dataset]:
    """A minimal axial CT series (headers and pixels) in one frame of reference."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.SeriesInstanceUID = "DOSE1", "Dose^Test", study, series
        ds.FrameOfReferenceUID, ds.Modality, ds.StudyDate, ds.StudyTime = frame, "CT", "20240101", "120000"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-70.0, -60.0, -20.0 + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.Rows, ds.Columns = rows, cols
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.zeros((rows, cols), np.int16).tobytes()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        out.append(ds)
    return out


def ct_image(slices: list[Dataset]) -> sitk.Image:
    from node.imaging.volumes import ct_series_image

    return ct_series_image(slices)


def rotation(deg: tuple[float, float, float]) -> np.ndarray:
    a, b, c = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def dose_image(direction: np.ndarray, top_gy: float = 80.0, seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, top_gy, (9, 11, 13)).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((2.5, 3.0, 3.5))
    img.SetOrigin((-20.0, -15.0, 5.0))
    img.SetDirection(tuple(direction.ravel()))
    return img


DIRECTIONS = {
    "axial": np.eye(3),
    "feet-first": np.column_stack([[-1, 0, 0], [0, 1, 0], [0, 0, -1]]).astype(float),
    "frames against row x column": np.column_stack([[1, 0, 0], [0, 1, 0], [0, 0, -1]]).astype(float),
    "oblique": rotation((12.0, -20.0, 33.0)),
    "coronal": np.column_stack([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).astype(float),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("top_gy", [80.0, 3000.0])  # 16-bit and 32-bit pixels
def test_round_trip_keeps_every_voxel_in_place(name: str, top_gy: float) -> None:
    cts = ct_slices()
    dose = dose_image(DIRECTIONS[name], top_gy)
    plan = build_rt_plan(cts[0], label="TEST", name="test", description="d", prescription="p")
    ds = build_rt_dose(dose, cts[0], series_description="test", comment="round trip", method="random dose",
                       rt_plan=plan)
    assert ds.BitsAllocated == (16 if top_gy < 655 else 32)
    back = read_rt_dose(pydicom.dcmread(pydicom.filebase.DicomBytesIO(_encode(ds))))
    step = float(ds.DoseGridScaling)
    # every voxel of the original, looked up in the decoded image at its own physical position
    moved = sitk.Resample(back.image, dose, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0, sitk.sitkFloat64)
    diff = sitk.GetArrayFromImage(moved) - sitk.GetArrayFromImage(dose)
    assert np.abs(diff).max() <= step / 2 + 1e-6
    assert back.frame_of_reference_uid == cts[0].FrameOfReferenceUID
    assert back.referenced_plan_uids == (plan.SOPInstanceUID,)
    assert ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL" and ds.DoseSummationType == "PLAN"
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)


def _encode(ds: Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _written(direction: np.ndarray = DIRECTIONS["axial"]) -> tuple[Dataset, sitk.Image]:
    cts = ct_slices()
    dose = dose_image(direction)
    plan = build_rt_plan(cts[0], label="TEST", name="test", description="d", prescription="p")
    return build_rt_dose(dose, cts[0], series_description="t", comment="c", method="m", rt_plan=plan), dose


def _values_at(rt, reference: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(rt.image, reference, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                -1.0, sitk.sitkFloat64))


def test_reader_accepts_absolute_descending_and_nonuniform_offsets() -> None:
    ds, dose = _written()
    expected = _values_at(read_rt_dose(ds), dose)
    # option b: absolute patient z in the offsets (axial grid)
    absolute = copy.deepcopy(ds)
    z0 = float(ds.ImagePositionPatient[2])
    absolute.GridFrameOffsetVector = [f"{z0 + float(v):g}" for v in ds.GridFrameOffsetVector]
    rt = read_rt_dose(absolute)
    assert np.array_equal(_values_at(rt, dose), expected) and any("absolute" in n for n in rt.notes)
    # frames stored from the last to the first plane (negative offsets from the first one stored)
    frames = ds.pixel_array
    reverse = copy.deepcopy(ds)
    n = frames.shape[0]
    dz = float(ds.GridFrameOffsetVector[1])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    reverse.ImagePositionPatient = [f"{v:.6f}" for v in ipp + np.array([0, 0, (n - 1) * dz])]
    reverse.GridFrameOffsetVector = [f"{-k * dz:g}" for k in range(n)]
    reverse.PixelData = np.ascontiguousarray(frames[::-1]).tobytes()
    assert np.array_equal(_values_at(read_rt_dose(reverse), dose), expected)
    # non-uniform offsets: the planes are where they say; linear along the normal in between
    uneven = copy.deepcopy(ds)
    positions = np.cumsum([0.0] + [dz if k % 2 else 2 * dz for k in range(n - 1)])
    uneven.GridFrameOffsetVector = [f"{p:g}" for p in positions]
    rt = read_rt_dose(uneven)
    assert any("non-uniform" in note for note in rt.notes)
    z = np.asarray(rt.image.GetOrigin())[2] + np.arange(rt.image.GetSize()[2]) * rt.image.GetSpacing()[2]
    decoded = sitk.GetArrayFromImage(rt.image)
    for k, p in enumerate(positions):
        kk = int(np.argmin(np.abs(z - (ipp[2] + p))))
        assert np.allclose(decoded[kk], frames[k] * float(ds.DoseGridScaling))


def test_reader_single_frame_units_and_refusals() -> None:
    ds, _ = _written()
    single = copy.deepcopy(ds)
    single.NumberOfFrames = 1
    single.PixelData = ds.pixel_array[:1].tobytes()
    single.GridFrameOffsetVector = ["0"]
    rt = read_rt_dose(single)
    assert rt.image.GetSize()[2] == 1 and any("single dose plane" in n for n in rt.notes)
    cgy = copy.deepcopy(ds)
    cgy.DoseUnits = "CGY"
    assert np.allclose(sitk.GetArrayFromImage(read_rt_dose(cgy).image),
                       sitk.GetArrayFromImage(read_rt_dose(ds).image) / 100.0)
    cases = {"RELATIVE": ("DoseUnits", "RELATIVE"), "error map": ("DoseType", "ERROR")}
    for _what, (kw, value) in cases.items():
        bad = copy.deepcopy(ds)
        setattr(bad, kw, value)
        with pytest.raises(DoseInputError):
            read_rt_dose(bad)
    shuffled = copy.deepcopy(ds)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[2], offsets[3] = offsets[3], offsets[2]
    shuffled.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    with pytest.raises(DoseInputError, match="monotonic"):
        read_rt_dose(shuffled)
    ambiguous = copy.deepcopy(ds)
    ambiguous.GridFrameOffsetVector = [f"{7.0 + float(v):g}" for v in ds.GridFrameOffsetVector]
    with pytest.raises(DoseInputError, match="ambiguous"):
        read_rt_dose(ambiguous)
    missing = copy.deepcopy(ds)
    del missing.GridFrameOffsetVector
    with pytest.raises(DoseInputError, match="Grid Frame Offset Vector"):
        read_rt_dose(missing)
    with pytest.raises(DoseInputError, match="another frame of reference"):
        dose_on_grid(read_rt_dose(ds), ct_image(ct_slices()), frame_of_reference_uid="1.2.3")


@pytest.mark.parametrize("name", ["axial", "oblique", "feet-first"])
def test_dose_on_a_ct_grid_is_exact_for_a_linear_dose(name: str) -> None:
    """Trilinear interpolation reproduces a linear dose field exactly, whatever the dose grid's orientation."""
    cts = ct_slices()
    ct = ct_image(cts)
    dose = dose_image(DIRECTIONS[name])
    d = np.asarray(dose.GetDirection()).reshape(3, 3) * np.asarray(dose.GetSpacing())
    kji = np.indices(sitk.GetArrayViewFromImage(dose).shape).reshape(3, -1).T
    xyz = kji[:, ::-1] @ d.T + np.asarray(dose.GetOrigin())
    field = lambda p: 20.0 + 0.1 * p[..., 0] - 0.05 * p[..., 1] + 0.08 * p[..., 2]  # noqa: E731
    values = field(xyz).reshape(sitk.GetArrayViewFromImage(dose).shape).astype(np.float32)
    linear = sitk.GetImageFromArray(values)
    linear.CopyInformation(dose)
    plan = build_rt_plan(cts[0], label="TEST", name="t", description="d", prescription="p")
    rt = read_rt_dose(build_rt_dose(linear, cts[0], series_description="t", comment="c", method="m", rt_plan=plan))
    sampled, inside = dose_on_grid(rt, ct, cts[0].FrameOfReferenceUID)
    assert inside.sum() > 100
    cd = np.asarray(ct.GetDirection()).reshape(3, 3) * np.asarray(ct.GetSpacing())
    ckji = np.indices(sampled.shape).reshape(3, -1).T
    cxyz = (ckji[:, ::-1] @ cd.T + np.asarray(ct.GetOrigin())).reshape(*sampled.shape, 3)
    assert np.abs(sampled[inside] - field(cxyz)[inside]).max() < 0.01
    assert (sampled[~inside] == 0).all()


def test_writer_refuses_what_it_cannot_encode() -> None:
    cts = ct_slices()
    dose = dose_image(np.eye(3))
    with pytest.raises(ValueError, match="requires the RT Plan"):
        build_rt_dose(dose, cts[0], series_description="t", comment="c", method="m")
    plan = build_rt_plan(cts[0], label="TEST", name="t", description="d", prescription="p")
    with pytest.raises(ValueError, match="64 characters"):
        build_rt_dose(dose, cts[0], series_description="t", comment="c" * 65, method="m", rt_plan=plan)
    nan = sitk.GetImageFromArray(np.full((2, 2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_rt_dose(nan, cts[0], series_description="t", comment="c", method="m", rt_plan=plan)


def test_written_rt_dose_with_plan_structure_set_and_dvh_is_dciodvfy_clean(tmp_path: Path) -> None:
    cts = ct_slices()
    ct = ct_image(cts)
    mask = np.zeros(sitk.GetArrayViewFromImage(ct).shape, bool)
    mask[3:9, 10:30, 12:36] = True
    rs = rtstruct.write_rtstruct(cts, [rtstruct.RoiMask("Liver", mask)])
    dose = dose_image(np.eye(3))
    dvh = region_dvh("Liver", dose, mask, ct)
    plan = build_rt_plan(cts[0], label="Y90 SIRT", name="Y-90 radioembolization",
                         description="resin microspheres 1.8 GBq, LSF 8 %", prescription="1.8 GBq (resin)",
                         structure_set=rs)
    ds = build_rt_dose(dose, cts[0], series_description="Y-90 dose (LDM)", comment="Y-90 LDM from MAA SPECT",
                       method="local deposition", rt_plan=plan, structure_set=rs, dvhs={"Liver": dvh},
                       source_images=cts[:1])
    for name, obj in (("plan", plan), ("dose", ds),
                      ("plan without structures",
                       build_rt_plan(cts[0], label="X", name="x", description="d", prescription="p"))):
        path = tmp_path / f"{name}.dcm"
        obj.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert "DERIVED, not for primary diagnosis" in ds.SeriesDescription and "DERIVED" in ds.ImageType
    # the RT DVH holds the cumulative DVH: bins of constant width, volumes at their lower edges
    item = ds.DVHSequence[0]
    data = np.asarray([float(v) for v in item.DVHData])
    width, volumes = data[0::2], data[1::2]
    assert np.allclose(width, width[0]) and volumes[0] == pytest.approx(dvh.total, rel=1e-6)
    k = int(round(40.0 / width[0]))
    assert volumes[k] == pytest.approx(dvh.v(k * width[0]) / 100 * dvh.total, rel=1e-6)
