"""Report groups: the neutral form in which a workflow hands its measurements to the case report.

A workflow turns its typed measurements into groups (one per region or topic) of numeric items, each with a
coded concept, a UCUM unit and a coded method (see ``Workflow.report_groups``); the SR writer
(``node.report.sr``) and the summary page (``node.report.summary``) both work from these groups and know
nothing about any workflow.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

__all__ = ["Coded", "Item", "Group", "referenced", "nearest_position", "private", "fmt", "PRIVATE_SCHEME",
           "REGION_NAMES", "region_name"]

#: Private coding scheme of this software (PS3.16 8.2: a designator starting with "99"); its values are stable,
#: so a receiving system can map them once.
PRIVATE_SCHEME = "99LIVERNODE"


#: The one name of each organ region on every page, table, summary row and SR group of a case (tumours keep the
#: name of their contour: "T1"): the records' keys ("non-tumoural liver", "whole liver", "lungs") are identifiers;
#: people read these. "Normal liver" is the liver minus the tumours (the partition model's and the DVH's).
REGION_NAMES = {"non-tumoural liver": "Normal liver", "normal liver": "Normal liver", "whole liver": "Liver",
                "liver": "Liver", "lungs": "Lungs", "lung": "Lungs"}


def region_name(key: str) -> str:
    """The case-wide name of a region for people (REGION_NAMES); any other name (a tumour's) unchanged."""
    return REGION_NAMES.get(key.strip().lower(), key)


@dataclass(frozen=True)
class Coded:
    """A coded concept (code value, coding scheme designator, code meaning <= 64 characters)."""

    value: str
    scheme: str
    meaning: str


def private(value: str, meaning: str) -> Coded:
    """A concept of this software's private coding scheme."""
    return Coded(value, PRIVATE_SCHEME, meaning)


@dataclass(frozen=True)
class Item:
    """One numeric measurement: what (concept), value, UCUM unit, how (method), a label for people."""

    concept: Coded
    value: float
    unit: str
    method: Coded
    label: str  # for people: e.g. "T/N", "ALP mean (max slope)"
    derivation: str | None = None  # "mean" or "sd"
    uncertainty: float | None = None  # 1-SD of the value (same unit): the SR's measurement uncertainty (TID 310)
    not_measurable: str | None = None  # why the value cannot be trusted (then it carries a qualifier)
    decimals: int | None = None  # the value's precision (decimal places); None: the unit's default (codes)


@dataclass
class Group:
    """Measurements of one region or topic (one TID 1501 group)."""

    workflow: str  # the registered workflow's name
    identifier: str  # tracking identifier, unique in the report
    site: Coded | None  # finding site
    finding: Coded | None  # finding type (e.g. tumour)
    items: list[Item] = field(default_factory=list)
    sources: list[Dataset] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)  # method details (algorithm parameters)
    #: the region's name as every output of the case writes it (RTSTRUCT ROI, page label, summary row):
    #: "T1", "Liver", "Lungs"; "" for a topic that is no region (an activity, a correlation). Groups of one
    #: region share its tracking UID in the SR: one finding, measured by several workflows.
    region: str = ""
    region_source: str = ""  # where the region comes from, in words ("planning CT, RTSTRUCT 'Liver'")
    #: qualitative evaluations (name, value), e.g. a safety flag: (Finding, Above reference range)
    evaluations: list[tuple[Coded, Coded]] = field(default_factory=list)

    def add(self, concept: Coded, value: float | None, unit: str, method: Coded, label: str,
            derivation: str | None = None, scale: float = 1.0, uncertainty: float | None = None,
            not_measurable: str | None = None, decimals: int | None = None) -> None:
        """Append an item when `value` is a finite number; None (not measured) and NaN are not reported.

        The value comes from a typed field, so a renamed field fails type checking; None is a value the
        workflow recorded on purpose ("not computed"), never a missing key. `uncertainty` is its 1-SD
        (scaled like the value); `not_measurable` says why the value must not be trusted (it is then
        qualified); `decimals` its precision when the unit's default (node.report.codes.DECIMALS) does not fit.
        """
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{self.identifier}: {label} is {type(value).__name__}, not a number")
        if math.isfinite(float(value)):
            sd = (float(uncertainty) * scale if uncertainty is not None and math.isfinite(float(uncertainty))
                  else None)
            self.items.append(Item(concept, float(value) * scale, unit, method, label, derivation, sd,
                                   not_measurable, decimals))

    def item(self, concept: Coded, method: Coded | None = None, derivation: str | None = None) -> Item | None:
        """The first item of `concept` (and `method`, `derivation` when given; else of any derivation), or None."""
        for i in self.items:
            if i.concept == concept and (method is None or i.method == method) and \
                    (derivation is None or i.derivation == derivation):
                return i
        return None

    def get(self, concept: Coded, method: Coded | None = None, derivation: str | None = None) -> float | None:
        """The value of the first item of `concept` (and `method`, `derivation` when given), else None."""
        for i in self.items:
            if i.concept == concept and (method is None or i.method == method) and \
                    (derivation is None or i.derivation == derivation):
                return i.value
        return None


def referenced(groups: Iterable[Group]) -> list[Dataset]:
    """Every source dataset of the groups, once."""
    seen: set[str] = set()
    out: list[Dataset] = []
    for g in groups:
        for ds in g.sources:
            uid = str(ds.SOPInstanceUID)
            if uid not in seen:
                seen.add(uid)
                out.append(ds)
    return out


def nearest_position(datasets: Sequence[Dataset], centre: Sequence[float] | None) -> list[Dataset]:
    """All instances (every time point) at the slice position nearest `centre` (e.g. a curve's source images)."""
    usable = [ds for ds in datasets if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if not usable or centre is None:
        return []
    iop = np.asarray(usable[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    level = float(np.asarray(centre, dtype=float) @ normal)
    pos = np.array([float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal) for ds in usable])
    best = pos[np.argmin(np.abs(pos - level))]
    return [ds for ds, p in zip(usable, pos, strict=True) if abs(p - best) < 1e-3]


def fmt(v: float | None, width: int = 8) -> str:
    """A value for the summary's tables: 3 significant figures or so, right-aligned; "-" when not measured."""
    if v is None:
        return "-".rjust(width)
    a = abs(v)
    text = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"
    return text.rjust(width)
