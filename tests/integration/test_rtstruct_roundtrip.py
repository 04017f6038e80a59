"""Masks -> RTSTRUCT -> masks, rasterised back by rtstruct and by plastimatch (an independent rasteriser).

The synthetic CT series are built here with pydicom; their voxel centres are computed here from
ImagePositionPatient / ImageOrientationPatient / PixelSpacing (PS3.3 C.7.6.2.1.1), independently of the library.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

import rtstruct

ROWS = COLS = 64
# ImageOrientationPatient of the four patient positions; the slice normal row x col is +z for HFS/HFP, -z for FF*.
HFS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FFS = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
HFP = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
FFP = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def make_ct(z_positions, *, orientation=HFS, spacing=(0.8, 1.1), origin=(-30.0, -25.0), directory: Path | None = None,
            frame_uid: str | None = None, rows: int = ROWS, cols: int = COLS, seed: int = 0) -> list[Dataset]:
    """Single-frame CT slices at patient z = `z_positions` (acquisition order), returned shuffled.

    SliceLocation is deliberately wrong and InstanceNumber runs against z, so only ImagePositionPatient may
    be used to order the slices. Written as files to `directory` when given (for plastimatch).
    """
    study, series = generate_uid(), generate_uid()
    frame_uid = frame_uid or generate_uid()
    slices = []
    for i, z in enumerate(z_positions):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Liver", "RT0001", "19600101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "S42"
        ds.AccessionNumber, ds.ReferringPhysicianName = "ACC42", "Ref^Doctor"
        ds.PositionReferenceIndicator = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, len(z_positions) - i
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [origin[0], origin[1], float(z)]
        ds.ImageOrientationPatient = list(orientation)
        ds.SliceLocation = -float(z) + 7.0
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((rows, cols), 1024, dtype=np.int16).tobytes()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            pydicom.dcmwrite(directory / f"ct{i:03d}.dcm", ds, enforce_file_format=True)
        slices.append(ds)
    order = np.random.default_rng(seed).permutation(len(slices))
    return [slices[i] for i in order]


def voxel_centres(slices: list[Dataset]) -> np.ndarray:
    """Patient coordinates (K, R, C, 3) of every voxel centre, slices in the given order."""
    ipp = np.array([ds.ImagePositionPatient for ds in slices], dtype=float)
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    d_row, d_col = (float(v) for v in slices[0].PixelSpacing)
    rows = np.arange(slices[0].Rows)[:, None, None] * d_row * iop[3:]
    cols = np.arange(slices[0].Columns)[None, :, None] * d_col * iop[:3]
    return ipp[:, None, None, :] + (rows + cols)[None]


def phantom_masks(slices: list[Dataset], seed: int = 1) -> dict[str, np.ndarray]:
    """Test structures on the CT grid: a ring (hole on every slice), islands, 1-voxel structures, random blobs."""
    p = voxel_centres(slices)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    cx, cy, cz = x.mean(), y.mean(), z.mean()
    rho = np.hypot(x - cx, y - cy)
    shape = x.shape
    thin = np.zeros(shape, dtype=bool)
    thin[:, 5, 3:60] = True                      # one voxel wide horizontal line
    thin[1:-1, 10:50, 58] = True                 # one voxel wide vertical line
    thin[:, 30, 30] = True                       # a single voxel
    steps = np.arange(12)
    thin[:, 40 + steps, 10 + steps] = True       # diagonal chain: voxels touch only at corners
    noise = np.random.default_rng(seed).standard_normal(shape)
    return {
        "Ring": (rho >= 6) & (rho <= 18) & (np.abs(z - cz) <= 12),
        "Islands": (((x - cx - 16) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= 8 ** 2)
                    | ((x - cx + 16) ** 2 + (y - cy - 6) ** 2 + (z - cz) ** 2 <= 6 ** 2)
                    | ((x - cx) ** 2 + (y - cy + 17) ** 2 <= 3 ** 2)),
        "Thin": thin,
        "Blobs": ndimage.gaussian_filter(noise, (0.6, 1.5, 1.5)) > 0.12,
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def plastimatch_masks(rtss_path: Path, ct_dir: Path, out_dir: Path, slices: list[Dataset], names,
                      grid: list[str] | None = None) -> dict[str, np.ndarray]:
    """Rasterise with `plastimatch convert --xor-contours`, sampled back at our voxel centres.

    plastimatch writes OUT/<ROI name>.mha on its own grid and axis order (x fastest, its own direction
    matrix, ITK's (z, y, x) array order); each of our voxel centres is mapped to the nearest plastimatch voxel
    through that image's origin, spacing and direction.
    """
    exe = shutil.which("plastimatch")
    assert exe, "plastimatch is required (scripts/install-test-tools.sh)"
    cmd = [exe, "convert", "--input", str(rtss_path), "--referenced-ct", str(ct_dir),
           "--output-prefix", str(out_dir), "--xor-contours", *(grid or [])]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    centres = voxel_centres(slices)
    masks = {}
    for name in names:
        image = sitk.ReadImage(str(out_dir / f"{name}.mha"))
        origin = np.array(image.GetOrigin())
        direction = np.array(image.GetDirection()).reshape(3, 3)
        index = np.rint(((centres - origin) @ direction) / np.array(image.GetSpacing())).astype(int)
        inside = np.all((index >= 0) & (index < np.array(image.GetSize())), axis=-1)
        array = sitk.GetArrayFromImage(image)
        sampled = np.zeros(centres.shape[:3], dtype=bool)
        i = index[inside]
        sampled[inside] = array[i[:, 2], i[:, 1], i[:, 0]] > 0
        masks[name] = sampled
    return masks


# Non-uniform gaps (with 3-decimal positions): ITK images are uniform, and plastimatch given this CT keeps only
# its longest uniformly spaced run of slices (it prints "inequal slice spacing ... best chunk"), like RayStation's
# known mis-mapping. So plastimatch is asked for an explicit grid whose 0.125 mm z step holds every CT slice.
NONUNIFORM_Z = [-20.0, -17.5, -15.0, -13.0, -9.875, -8.5, -7.0, -5.0, -2.5, 0.0, 1.25, 2.5, 5.0, 7.5, 10.0]
CASES = {
    "hfs_anisotropic": dict(z=list(2.5 * np.arange(14) - 20.0), orientation=HFS, spacing=(0.7, 1.3)),
    "nonuniform_spacing": dict(z=NONUNIFORM_Z, orientation=HFS, spacing=(0.8, 1.1),
                               grid=["--origin", "-30 -25 -20", "--spacing", "1.1 0.8 0.125",
                                     "--dim", f"64 64 {int(30 / 0.125) + 1}"]),
    "feet_first_reversed": dict(z=list(100.125 - 2.5 * np.arange(12)), orientation=FFS, spacing=(0.9, 0.9)),
    "head_first_prone": dict(z=list(-3.0 * np.arange(10)), orientation=HFP, spacing=(1.0, 0.75)),
    "feet_first_prone": dict(z=list(3.0 * np.arange(10)), orientation=FFP, spacing=(0.75, 1.0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_library_and_plastimatch(case: str, tmp_path: Path) -> None:
    spec = CASES[case]
    ct = make_ct(spec["z"], orientation=spec["orientation"], spacing=spec["spacing"], directory=tmp_path / "ct")
    slices = rtstruct.sort_slices(ct)
    truth = phantom_masks(slices)
    # The phantom really has what the test is about: holes, several islands on one slice, 1-voxel structures.
    assert any(ndimage.binary_fill_holes(s).sum() > s.sum() for s in truth["Ring"])
    assert max(ndimage.label(s)[1] for s in truth["Islands"]) >= 2
    assert truth["Thin"].any() and all(m.any() for m in truth.values())

    rois = [rtstruct.RoiMask(name, mask) for name, mask in truth.items()]
    path = tmp_path / "rtss.dcm"
    pydicom.dcmwrite(path, rtstruct.write_rtstruct(ct, rois), enforce_file_format=True)
    rtss = pydicom.dcmread(path)

    back = rtstruct.read_masks(rtss, ct)
    assert list(back) == list(truth)
    for name, mask in truth.items():
        assert np.array_equal(back[name], mask), f"{case}/{name}: library round trip is not exact"

    independent = plastimatch_masks(path, tmp_path / "ct", tmp_path / "pm", slices, truth,
                                    spec.get("grid"))  # type: ignore[arg-type]
    for name, mask in truth.items():
        score = dice(independent[name], mask)
        assert score >= 0.99, f"{case}/{name}: plastimatch Dice {score:.4f}"


def fishbone(shape: tuple[int, int]) -> np.ndarray:
    """One 4-connected, hole-free shape with a very jagged outline: a spine with teeth that carry bumps."""
    m = np.zeros(shape, dtype=bool)
    m[2:-2, 1] = True                                # spine
    m[3:-3:3, 1:-2] = True                           # teeth on every third row
    m[4:-3:3, 2:-2:2] = True                         # bumps under each tooth, on every other column
    return m


def corner_count(mask2d: np.ndarray) -> int:
    """Number of polygon corners of a mask's voxel-edge outline: 2x2 windows with an odd number of voxels."""
    p = np.pad(mask2d, 1).astype(int)
    window = p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]
    return int(np.count_nonzero(window % 2 == 1))


def test_huge_contour_is_split_and_still_rasterises_exactly(tmp_path: Path) -> None:
    ct = make_ct(list(2.0 * np.arange(4)), spacing=(0.5, 0.5), directory=tmp_path / "ct")
    slices = rtstruct.sort_slices(ct)
    mask = np.zeros((4, ROWS, COLS), dtype=bool)
    mask[1] = fishbone((ROWS, COLS))
    mask[2, 10:20, 10:20] = True
    assert ndimage.label(mask[1])[1] == 1 and not (ndimage.binary_fill_holes(mask[1]) ^ mask[1]).any()
    assert corner_count(mask[1]) > 1280  # one outline that cannot fit one ContourData element

    path = tmp_path / "rtss.dcm"
    pydicom.dcmwrite(path, rtstruct.write_rtstruct(ct, [rtstruct.RoiMask("Fishbone", mask)]),
                     enforce_file_format=True)
    rtss = pydicom.dcmread(path)
    contours = rtss.ROIContourSequence[0].ContourSequence
    on_slice = [c for c in contours if c.ContourImageSequence[0].ReferencedSOPInstanceUID == slices[1].SOPInstanceUID]
    assert len(on_slice) >= 2
    for c in contours:
        assert 3 <= int(c.NumberOfContourPoints) <= 1280
        assert len("\\".join(str(v) for v in c.ContourData)) <= 65534  # explicit VR DS length limit
    assert sum(int(c.NumberOfContourPoints) for c in on_slice) >= corner_count(mask[1])

    assert np.array_equal(rtstruct.read_masks(rtss, ct)["Fishbone"], mask)
    independent = plastimatch_masks(path, tmp_path / "ct", tmp_path / "pm", slices, ["Fishbone"])
    assert dice(independent["Fishbone"], mask) >= 0.99
