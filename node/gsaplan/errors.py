"""Refusals of the GSA plan evaluation (shown to the operator)."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["PlanInputError"]


class PlanInputError(AnalysisError):
    """The returned plan dose cannot be evaluated (the message says which input and why)."""
