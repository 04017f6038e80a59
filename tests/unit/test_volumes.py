"""node.imaging.volumes: CT and NM geometry checked against a known field sampled in patient coordinates.

Every synthetic series samples f(x, y, z) = 3x - 2y + 4z + 1000 at its voxel centres, computed here from the
DICOM definition of the geometry (not from node.imaging.volumes); the built image must give f back at its own
physical points. Any error in origin, direction, spacing or slice order shows as a wrong value.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.errors import AnalysisError
from node.imaging.volumes import VolumeError, ct_series_image, image_to_mask, mask_to_image, nm_image

ROWS, COLS = 12, 10
PS = (1.5, 2.0)  # between rows, between columns


def field(points: np.ndarray) -> np.ndarray:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 3 * x - 2 * y + 4 * z + 1000


def plane_points(ipp, row, col) -> np.ndarray:
    """(ROWS, COLS, 3) patient coordinates of a slice's pixel centres, by the DICOM definition."""
    r = np.arange(ROWS)[:, None, None]
    c = np.arange(COLS)[None, :, None]
    return np.asarray(ipp) + c * PS[1] * np.asarray(row) + r * PS[0] * np.asarray(col)


def _image_dataset(sop_class: str, modality: str) -> Dataset:
    """File meta, SOP identity and the 16-bit monochrome image pixel module shared by the CT and NM builders."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PixelSpacing = list(PS)
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def ct_slice(ipp, row=(1, 0, 0), col=(0, 1, 0), slope=1.0, intercept=-1024.0, for_uid="1.2.3") -> Dataset:
    ds = _image_dataset("1.2.840.10008.5.1.4.1.1.2", "CT")
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.FrameOfReferenceUID = for_uid
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    stored = np.rint((field(plane_points(ipp, row, col)) - intercept) / slope).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    return ds


def check_field(image: sitk.Image, atol: float = 1e-3) -> None:
    """Image values equal f at the image's own physical voxel centres (all voxels)."""
    size = image.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    origin = np.asarray(image.GetOrigin())
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    pts = origin + (idx * np.asarray(image.GetSpacing())) @ d.T
    values = sitk.GetArrayFromImage(image).transpose(2, 1, 0).reshape(-1)
    np.testing.assert_allclose(values, field(pts), atol=atol)


def series(zs, **kw) -> list[Dataset]:
    row = kw.get("row", (1, 0, 0))
    col = kw.get("col", (0, 1, 0))
    normal = np.cross(row, col)
    return [ct_slice(np.array([-7.0, 4.0, 0.0]) + z * normal, **kw) for z in zs]


def test_head_first_series_in_shuffled_order():
    slices = series([0, 2.5, 5, 7.5, 10, 12.5])
    rng = np.random.default_rng(1)
    image = ct_series_image([slices[i] for i in rng.permutation(len(slices))])
    assert image.GetSize() == (COLS, ROWS, 6)
    assert image.GetSpacing() == pytest.approx((2.0, 1.5, 2.5))
    check_field(image)


def test_feet_first_series():
    # Feet-first supine: rows run to patient right (-x), so the normal points to the feet.
    slices = series([0, 3, 6, 9], row=(-1, 0, 0), col=(0, 1, 0))
    image = ct_series_image(slices)
    assert np.asarray(image.GetDirection()).reshape(3, 3)[:, 2] == pytest.approx([0, 0, -1])
    check_field(image)


def test_oblique_series_and_rescale_slope():
    row = (np.cos(0.3), np.sin(0.3), 0.0)
    col = (0.0, 0.0, -1.0)  # coronal-ish oblique
    image = ct_series_image(series([0, 4, 8], row=row, col=col, slope=0.5, intercept=-200.0))
    check_field(image, atol=0.5)  # slope 0.5: stored values are rounded to half units


def test_nonuniform_spacing_resampled_or_refused():
    slices = series([0, 3, 6, 11, 16, 18])
    image = ct_series_image(slices)
    assert image.GetSpacing()[2] <= 2.0 + 1e-9
    check_field(image, atol=1e-2)  # f is linear in z: linear interpolation is exact
    with pytest.raises(VolumeError, match="not uniform"):
        ct_series_image(slices, nonuniform="refuse")


def test_small_ipp_rounding_counts_as_uniform():
    slices = series([0, 2.5, 5.01, 7.5, 9.99, 12.5])
    assert ct_series_image(slices, nonuniform="refuse").GetSize()[2] == 6


@pytest.mark.parametrize("problem, match", [
    ("duplicate", "share one slice position"),
    ("shear", "gantry tilt"),
    ("orientation", "different ImageOrientationPatient"),
    ("size", "different sizes"),
])
def test_refusals(problem, match):
    slices = series([0, 2, 4])
    if problem == "duplicate":
        slices.append(series([2])[0])
    elif problem == "shear":
        for k, ds in enumerate(slices):
            ds.ImagePositionPatient = [-7.0, 4.0 + 0.8 * k, 2.0 * k]
    elif problem == "orientation":
        slices[1].ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]
    else:
        slices[2].Rows = ROWS + 1
    with pytest.raises(VolumeError, match=match) as info:
        ct_series_image(slices)
    assert isinstance(info.value, AnalysisError)


def nm_dataset(sbs: float, n: int = 7, slice_vector=None, slope=None) -> Dataset:
    """NM RECON TOMO: frame k lies at detector IPP + k * SBS * (row x col) (PS3.3 C.8.4.15 / dicom-notes)."""
    row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    origin = np.array([-20.0, -10.0, 40.0 if sbs < 0 else 40.0 - 6 * 4.0])
    frames = [field(plane_points(origin + k * sbs * np.cross(row, col), row, col)) for k in range(n)]
    ds = _image_dataset("1.2.840.10008.5.1.4.1.1.20", "NM")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.NumberOfFrames = n
    ds.SpacingBetweenSlices = sbs
    ds.SliceThickness = abs(sbs)
    det = Dataset()
    det.ImagePositionPatient = [float(v) for v in origin]
    det.ImageOrientationPatient = [float(v) for v in (*row, *col)]
    ds.DetectorInformationSequence = [det]
    order = list(range(n))
    if slice_vector is not None:
        order = [v - 1 for v in slice_vector]  # frame i holds slice slice_vector[i]
        ds.SliceVector = list(slice_vector)
    stack = np.stack([frames[k] for k in order])
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, 0.0
        stack = stack / slope
    ds.PixelData = np.rint(stack).astype(np.uint16).tobytes()
    return ds


@pytest.mark.parametrize("sbs", [4.0, -4.0])
def test_nm_geometry_either_spacing_sign(sbs):
    image = nm_image(nm_dataset(sbs))
    assert image.GetSpacing()[2] == pytest.approx(4.0)
    check_field(image)


def test_nm_negative_and_positive_spacing_cover_the_same_volume():
    a, b = nm_image(nm_dataset(4.0)), nm_image(nm_dataset(-4.0))
    resampled = sitk.Resample(b, a, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(a))


def test_nm_slice_vector_order_and_rescale():
    check_field(nm_image(nm_dataset(4.0, n=5, slice_vector=[3, 1, 2, 5, 4], slope=2.0)), atol=1.0)


def test_nm_refusals():
    ds = nm_dataset(4.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    with pytest.raises(VolumeError, match="RECON TOMO"):
        nm_image(ds)
    ds = nm_dataset(4.0)
    del ds.DetectorInformationSequence
    with pytest.raises(VolumeError, match="position in the patient is unknown"):
        nm_image(ds)


def test_mask_round_trip_uniform_and_nonuniform():
    for zs in ([0, 2, 4, 6, 8], [0, 3, 6, 11, 16, 18]):
        slices = series(zs, row=(-1, 0, 0))
        image = ct_series_image(slices)
        rng = np.random.default_rng(3)
        mask = rng.random((len(slices), ROWS, COLS)) > 0.5
        # The mask of slice k follows the list order; shuffle the list to prove order independence.
        perm = rng.permutation(len(slices))
        shuffled = [slices[i] for i in perm]
        as_image = mask_to_image(mask[perm], shuffled, image)
        back = image_to_mask(as_image, slices)
        np.testing.assert_array_equal(back, mask)
        # Each image slice holds the mask of the CT slice nearest to it (independent position check).
        z_img = np.asarray([as_image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(image.GetSize()[2])])
        z_ct = np.asarray([float(ds.ImagePositionPatient[2]) for ds in slices])
        nearest = np.abs(z_img[:, None] - z_ct[None, :]).argmin(axis=1)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(as_image) > 0, mask[nearest])


def test_mask_grid_mismatch_refused():
    slices = series([0, 2, 4])
    other = ct_series_image(series([0, 2, 4], row=(0, 1, 0), col=(1, 0, 0)))
    with pytest.raises(VolumeError, match="in-plane grid"):
        image_to_mask(other, slices)


def test_integer_volume_rounds_and_clips():
    slices = series([0, 3, 6, 11])  # non-uniform: resampled, still int16
    image = ct_series_image(slices, dtype=np.int16)
    assert image.GetPixelID() == sitk.sitkInt16
    check_field(sitk.Cast(image, sitk.sitkFloat32), atol=0.5 + 1e-6)
