"""What the GSA workflow hands to workflows that depend on it: the targets and the registered GSA SPECT on the
planning CT (the functional-liver dose of the plan the TPS sends back is read in them)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from node.gsa.measurements import GsaMeasurements
from node.workflow import WorkflowResult

__all__ = ["GsaReference", "GsaResult"]


@dataclass(frozen=True)
class GsaReference:
    """Liver, FLS, ITV, PTV and the GSA counts on a box of the planning CT (the liver grown by the PTV margin)."""

    grid: sitk.Image  # geometry only: the box of the planning CT
    liver: np.ndarray  # bool (z, y, x) on grid
    fls: np.ndarray
    itv: np.ndarray
    ptv: np.ndarray
    gsa_counts: np.ndarray  # float32: the registered GSA SPECT (the image FLS was thresholded on)
    counts_filter: str  # how that SPECT was filtered, in words
    frame_of_reference_uid: str  # the planning CT's
    patient_id: str
    liver_roi_name: str


@dataclass
class GsaResult(WorkflowResult[GsaMeasurements]):
    """The GSA result, with its targets on the planning CT."""

    reference: GsaReference | None = None
