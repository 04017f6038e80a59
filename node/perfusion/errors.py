"""Refusals of a perfusion series, shown to the operator in `status` (all are node.errors.AnalysisError)."""
from __future__ import annotations

from node.errors import AnalysisError


class PerfusionInputError(AnalysisError):
    """The series cannot be assembled into a 4D volume (geometry, time points, times, pixel data)."""


class InputCurveError(AnalysisError):
    """The aorta, portal vein or spleen input curve could not be found or is implausible."""
