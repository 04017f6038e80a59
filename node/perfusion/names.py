"""The one clinician-facing name of each perfusion method: every page, the SR's labels, the summary, the logs,
the warnings and the status say the method as written here, whatever spelling reached the code.

The configuration keys (``[analysis.perfusion] methods = ["max-slope", "discm"]``) and the Parametric Maps'
content labels ("MAXSLOPE_ALP", "DISCM_ALP") are identifiers, not names: they stay as they are (backward
compatible), and :func:`method_key` maps any of their spellings to the key.
"""
from __future__ import annotations

__all__ = ["METHOD_NAME", "METHOD_LABEL", "method_key", "method_name", "method_label"]

#: Full name (titles, running text): what the method is, in a clinician's words.
METHOD_NAME = {"max-slope": "maximum slope", "discm": "dual-input single-compartment model (DISCM)"}
#: Short label (table cells, panel captions, flags): the name, or its abbreviation as the full name defines it.
METHOD_LABEL = {"max-slope": "maximum slope", "discm": "DISCM"}

_SPELLINGS = {"maxslope": "max-slope", "maximumslope": "max-slope", "dualinputmaximumslope": "max-slope",
              "discm": "discm", "dualinputsinglecompartmentmodel": "discm", "singlecompartment": "discm",
              "singlecompartmentmodel": "discm", "onecompartmentmodel": "discm"}


def method_key(spelling: str) -> str:
    """The method's key ("max-slope", "discm") from any spelling ("MaxSlope", "max slope", "MAXSLOPE", "DISCM",
    "single-compartment"); an unknown spelling is returned lower-cased."""
    squashed = "".join(ch for ch in spelling.lower() if ch.isalnum())
    return _SPELLINGS.get(squashed, spelling.lower())


def method_name(spelling: str) -> str:
    """The full clinician-facing name of a method, from any spelling of it."""
    key = method_key(spelling)
    return METHOD_NAME.get(key, spelling)


def method_label(spelling: str) -> str:
    """The short clinician-facing label of a method (tables, flags), from any spelling of it."""
    key = method_key(spelling)
    return METHOD_LABEL.get(key, spelling)
