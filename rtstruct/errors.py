"""Exceptions raised by the rtstruct library."""
from __future__ import annotations


class RTStructError(Exception):
    """An RT Structure Set or its CT cannot be converted (inconsistent series, unknown ROI, bad contour)."""


class ReferenceMismatchError(RTStructError):
    """The RT Structure Set was not drawn on the given CT (frame of reference or referenced slices differ)."""
