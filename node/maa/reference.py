"""What the MAA workflow hands to workflows that depend on it: the Y-90 dose it predicted (post-therapy dosimetry
compares the delivered dose with it, region by region)."""
from __future__ import annotations

from dataclasses import dataclass

from node.maa.dosimetry import DoseReference, DoseRegion
from node.maa.measurements import MaaMeasurements
from node.workflow import WorkflowResult

__all__ = ["MaaResult", "DoseReference", "DoseRegion"]


@dataclass
class MaaResult(WorkflowResult[MaaMeasurements]):
    """The MAA result, with the predicted dose (None when it was not computed)."""

    dose: DoseReference | None = None
