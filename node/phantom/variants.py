"""Variant names (combinable) and the checks of a requested combination."""
from __future__ import annotations

from collections.abc import Sequence

VARIANTS: tuple[str, ...] = (
    "shuffled-instance-numbers",  # InstanceNumber (and file name) order unrelated to position or time
    "temporal-position",          # time only as TemporalPositionIdentifier (+ TemporalResolution, ms)
    "enhanced-ct",                # perfusion as one Enhanced CT multi-frame object
    "feet-first",                 # CT series acquired FFS (geometry consistent)
    "negative-spacing",           # NM with negative SpacingBetweenSlices, frames stored head -> feet
    "jpeg-lossless",              # CT pixel data JPEG Lossless process 14 SV1 (dcmcjpeg)
    "jpeg2000",                   # CT pixel data JPEG 2000 lossless (pydicom + pylibjpeg-openjpeg)
    "nonuniform-time",            # perfusion frames 2 s apart early, up to 6 s apart late
    "motion",                     # rigid breathing translation between perfusion frames
    "noiseless",                  # no CT noise, no Poisson noise in the SPECT
    "y90",                        # Y-90 dose truth (MAA-predicted) + post-therapy Y-90 PET/CT (y90.py)
    "tps-rtdose",                 # an analytic plan RT Dose "from the TPS" for the GSA case (tpsdose.py)
)


class PhantomError(ValueError):
    """The phantom cannot be written as requested (unknown size or variant, contradictory variants)."""


def check_variants(variants: Sequence[str]) -> frozenset[str]:
    """Validate variant names and combinations; return them as a set."""
    chosen = frozenset(variants)
    unknown = sorted(chosen - set(VARIANTS))
    if unknown:
        raise PhantomError(f"unknown phantom variant(s) {unknown}; choose from {list(VARIANTS)}")
    if {"jpeg-lossless", "jpeg2000"} <= chosen:
        raise PhantomError("choose one of 'jpeg-lossless' and 'jpeg2000'")
    if {"temporal-position", "nonuniform-time"} <= chosen:
        raise PhantomError("'temporal-position' carries one fixed time spacing; it cannot express 'nonuniform-time'")
    if {"temporal-position", "enhanced-ct"} <= chosen:
        raise PhantomError("'enhanced-ct' always carries FrameAcquisitionDateTime (Type 1C for ORIGINAL frames); "
                           "'temporal-position' applies to the classic CT series only")
    return chosen
