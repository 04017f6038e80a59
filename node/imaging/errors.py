"""Refusals of the shared imaging code (all are node.errors.AnalysisError: the workflow that hit one fails)."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["VolumeError", "RegistrationError"]


class VolumeError(AnalysisError):
    """A series cannot be turned into a volume with trustworthy geometry (the message says why)."""


class RegistrationError(AnalysisError):
    """Rigid registration failed or gave an implausible result (the message says which check failed)."""
