"""Errors of the dose package."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["DoseInputError"]


class DoseInputError(AnalysisError):
    """The inputs cannot give a dose (the message says which input and why, in words an operator can act on)."""
