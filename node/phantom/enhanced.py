"""Enhanced CT Image Storage writer: the whole perfusion series as ONE multi-frame object.

Frames are time-major (all slices of time point 0, then time point 1 ...). Each frame carries its
PlanePositionSequence and a FrameContentSequence with FrameAcquisitionDateTime, TemporalPositionIndex,
StackID/InStackPositionNumber and DimensionIndexValues (stack, in-stack position, temporal position).
"""
from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import EnhancedCTImageStorage, JPEG2000Lossless

from node.phantom import dicomio
from node.phantom.ct import RESCALE_INTERCEPT, hu_to_stored
from node.phantom.dicomio import Patient, Series, code_item
from node.phantom.geometry import Grid

_FRAME_DURATION_MS = 500.0


def _item(**attrs) -> Dataset:
    """A sequence item; values of FD attributes may be given as text or numbers and are stored as float."""
    ds = Dataset()
    for k, v in attrs.items():
        if dictionary_VR(k) == "FD":
            v = [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)
        setattr(ds, k, v)
    return ds


def _shared_groups(grid: Grid, kvp: str) -> Dataset:
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([_item(
        PixelSpacing=[f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"],
        SliceThickness=f"{grid.spacing[0]:.6g}", SpacingBetweenSlices=f"{grid.spacing[0]:.6g}")])
    shared.PlaneOrientationSequence = Sequence([_item(
        ImageOrientationPatient=[f"{v:.6g}" for v in (*grid.row_dir, *grid.col_dir)])])
    shared.PixelValueTransformationSequence = Sequence([_item(
        RescaleIntercept=f"{RESCALE_INTERCEPT:g}", RescaleSlope="1", RescaleType="HU")])
    shared.FrameVOILUTSequence = Sequence([_item(WindowCenter="40", WindowWidth="400")])
    anatomy = _item(FrameLaterality="U")
    anatomy.AnatomicRegionSequence = Sequence([code_item("818981001", "SCT", "Abdomen")])
    shared.FrameAnatomySequence = Sequence([anatomy])
    shared.CTImageFrameTypeSequence = Sequence([_item(
        FrameType=["ORIGINAL", "PRIMARY", "PERFUSION", "NONE"], PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE")])
    shared.CTAcquisitionTypeSequence = Sequence([_item(
        AcquisitionType="SEQUENCED", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")])
    shared.CTAcquisitionDetailsSequence = Sequence([_item(
        DataCollectionDiameter="500", GantryDetectorTilt="0", TableHeight="150", RotationDirection="CW",
        RevolutionTime="0.5", SingleCollimationWidth="0.5", TotalCollimationWidth="160")])
    shared.CTTableDynamicsSequence = Sequence([_item(TableSpeed="0", TableFeedPerRotation="0")])
    shared.CTGeometrySequence = Sequence([_item(
        DistanceSourceToDetector="1040", DistanceSourceToDataCollectionCenter="570")])
    shared.CTReconstructionSequence = Sequence([_item(
        ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel="STANDARD",
        ConvolutionKernelGroup="SOFT_TISSUE", ImageFilter="NONE",
        ReconstructionFieldOfView=[f"{grid.spacing[1] * grid.shape[1]:.6g}",
                                   f"{grid.spacing[2] * grid.shape[2]:.6g}"],
        ReconstructionPixelSpacing=[f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"],
        ReconstructionAngle="360")])
    shared.CTExposureSequence = Sequence([_item(
        ExposureTimeInms=_FRAME_DURATION_MS, XRayTubeCurrentInmA=100.0, ExposureInmAs=50.0,
        ExposureModulationType="NONE", CTDIvol=10.0)])
    shared.CTExposureSequence[0].CTDIPhantomTypeCodeSequence = Sequence(
        [code_item("113691", "DCM", "IEC Body Dosimetry Phantom")])
    shared.CTXRayDetailsSequence = Sequence([_item(
        KVP=kvp, FocalSpots=["0.9"], FilterType="BODY", FilterMaterial=["ALUMINUM"])])
    shared.ContrastBolusUsageSequence = Sequence([_item(ContrastBolusAgentNumber=1,
                                                        ContrastBolusAgentAdministered="YES",
                                                        ContrastBolusAgentDetected="YES")])
    return shared


def _contrast_module(ds: Dataset) -> None:
    agent = code_item("109219007", "SCT", "Iopamidol")
    agent.ContrastBolusAgentNumber = 1
    agent.ContrastBolusAdministrationRouteSequence = Sequence([code_item("47625008", "SCT", "Intravenous route")])
    ingredient = code_item("44588005", "SCT", "Iodine")
    agent.ContrastBolusIngredientCodeSequence = Sequence([ingredient])
    agent.ContrastBolusVolume = "40"
    agent.ContrastBolusIngredientConcentration = "370"
    agent.ContrastBolusIngredientOpaque = "YES"
    ds.ContrastBolusAgentSequence = Sequence([agent])


def _dimensions(ds: Dataset) -> None:
    org_uid = dicomio.new_uid()
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=org_uid)])
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    frame_content = Tag("FrameContentSequence")
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=org_uid, DimensionIndexPointer=Tag("StackID"),
              FunctionalGroupPointer=frame_content, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=org_uid, DimensionIndexPointer=Tag("InStackPositionNumber"),
              FunctionalGroupPointer=frame_content, DimensionDescriptionLabel="In-Stack Position"),
        _item(DimensionOrganizationUID=org_uid, DimensionIndexPointer=Tag("TemporalPositionIndex"),
              FunctionalGroupPointer=frame_content, DimensionDescriptionLabel="Temporal Position"),
    ])


def write_enhanced_ct(path: Path, patient: Patient, series: Series, grid: Grid, volumes: Iterable[np.ndarray],
                      times_s: Seq[float], patient_position: str = "HFS",
                      compression: str | None = None) -> Path:
    """Write the perfusion series (one HU volume per entry of `times_s`) as one Enhanced CT object."""
    ds = dicomio.base_dataset(patient, series, EnhancedCTImageStorage)
    ds.SOPInstanceUID = dicomio.new_uid()
    ds.PatientPosition = patient_position
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "PERFUSION", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ContentDate = series.start.strftime("%Y%m%d")
    ds.ContentTime = dicomio.dicom_time(series.start)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = dicomio.dicom_datetime(series.start)
    ds.AcquisitionDuration = float(times_s[-1] - times_s[0]) + _FRAME_DURATION_MS / 1000.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = "Synthetic digital phantom (liver-node): not a patient"
    ds.AcquisitionContextSequence = Sequence([])
    _contrast_module(ds)
    _dimensions(ds)
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(grid, "100")])

    n_slices = grid.shape[0]
    per_frame, pixels = [], []
    for t_index, volume in enumerate(volumes):
        when = dicomio.at_offset(series.start, float(times_s[t_index]))
        stamp = dicomio.dicom_datetime(when)
        event = dicomio.new_uid()   # one irradiation event per time point
        stored = hu_to_stored(volume)
        for k in range(n_slices):
            frame = Dataset()
            frame.FrameContentSequence = Sequence([_item(
                FrameAcquisitionNumber=t_index + 1, FrameReferenceDateTime=stamp,
                FrameAcquisitionDateTime=stamp, FrameAcquisitionDuration=_FRAME_DURATION_MS,
                TemporalPositionIndex=t_index + 1, StackID="1", InStackPositionNumber=k + 1,
                DimensionIndexValues=[1, k + 1, t_index + 1])])
            frame.PlanePositionSequence = Sequence([_item(
                ImagePositionPatient=[f"{v:.2f}" for v in grid.slice_origin(k)])])
            frame.CTPositionSequence = Sequence([_item(
                TablePosition=f"{grid.slice_origin(k)[2]:.2f}",
                ReconstructionTargetCenterPatient=[f"{v:.2f}" for v in grid.to_patient(
                    np.array([k, (grid.shape[1] - 1) / 2, (grid.shape[2] - 1) / 2]))],
                DataCollectionCenterPatient=[f"{v:.2f}" for v in grid.to_patient(
                    np.array([k, (grid.shape[1] - 1) / 2, (grid.shape[2] - 1) / 2]))])])
            frame.IrradiationEventIdentificationSequence = Sequence([_item(IrradiationEventUID=event)])
            per_frame.append(frame)
        pixels.append(stored)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(per_frame)
    array = np.ascontiguousarray(np.concatenate(pixels, axis=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression == "jpeg2000":
        ds.PixelData = array.tobytes()
        ds.compress(JPEG2000Lossless, array, encoding_plugin="pylibjpeg")
        dicomio.write(ds, path, JPEG2000Lossless)
    else:
        ds.PixelData = array.tobytes()
        dicomio.write(ds, path)
    return path
