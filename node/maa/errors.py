"""Refusals of the MAA workflow (shown to the operator)."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["MaaInputError"]


class MaaInputError(AnalysisError):
    """The MAA inputs cannot be analysed as given (wrong tracer, frames of reference, patients, regions)."""
