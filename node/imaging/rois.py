"""Which ROI of a received structure set is the liver: names as sites write them ([analysis] liver_roi_names).

Shared by every workflow that reads a liver contour (GSA on the planning CT, MAA on the SPECT/CT, the MAA
dose's RT DVH module), so that one name rule decides everywhere.
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["match_liver_roi"]


def match_liver_roi(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The ROI name to use: the first of `wanted` present exactly, else one equal ignoring case and blanks."""
    present = list(names)
    for w in wanted:
        if w in present:
            return w
    folded = {n.strip().casefold(): n for n in present}
    for w in wanted:
        if w.strip().casefold() in folded:
            return folded[w.strip().casefold()]
    return None
