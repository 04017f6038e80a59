"""Refusals of the case report."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["ReportError"]


class ReportError(AnalysisError):
    """No report can be made (nothing identifies the patient and study)."""
