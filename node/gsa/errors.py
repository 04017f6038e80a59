"""Refusals of the GSA workflow (shown to the operator; all are node.errors.AnalysisError)."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["GsaInputError", "LiverError", "TargetError"]


class GsaInputError(AnalysisError):
    """The inputs do not form a usable GSA case (wrong frames of reference, patients, series)."""


class LiverError(AnalysisError):
    """No liver could be found: no usable RTSTRUCT ROI and no GSA uptake region on the planning CT."""


class TargetError(AnalysisError):
    """The target volumes cannot be defined from these inputs (e.g. no SPECT counts inside the liver)."""
