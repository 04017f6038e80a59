"""Coded concepts shared by every workflow's report groups, and their conversion to highdicom concepts.

Standard codes where one exists: DICOM (DCM, PS3.16), SNOMED CT (SCT), LOINC (LN) for procedures, UCUM for
units; otherwise this software's private scheme (``node.report.groups.PRIVATE_SCHEME``), used only for
concepts no standard names (T/N ratio, lung shunt fraction, the arterial/portal perfusion split, ...).
Concepts and methods that only one workflow uses live in that workflow's ``report.py``; only what several
share is here. Each unit has a default precision (:data:`DECIMALS`): the SR states values rounded to it.
"""
from __future__ import annotations

from highdicom.sr import CodedConcept

from node.report.groups import Coded, private

__all__ = [
    "VOLUME", "MASS", "ABSORBED_DOSE", "MEAN_TRANSIT_TIME", "TIME_TO_PEAK", "REGION_VOLUME", "LIVER", "LUNG",
    "AORTA", "PORTAL_VEIN", "SPLEEN", "TUMOUR", "NOT_MEASURABLE", "DECIMALS", "concept", "unit", "derivation",
    "rounded", "decimals_of", "DOSE_D70", "DOSE_D90", "volume_receiving", "RATIO", "DOSE_DIFFERENCE", "DVH_METHOD",
    "NORMALITY", "ABOVE_RANGE", "BELOW_RANGE", "ADMINISTERED_ACTIVITY", "MEAN_DOSE", "MIN_DOSE", "MAX_DOSE",
    "MEDIAN_DOSE", "PERFUSION_UNITS", "PARAMETER_CONCEPTS", "MAX_SLOPE", "DISCM", "METHOD_CODES",
]

# ----------------------------------------------------------------- measurement names used by several workflows
VOLUME = Coded("118565006", "SCT", "Volume")
MASS = Coded("118538004", "SCT", "Mass")
ABSORBED_DOSE = Coded("128513", "DCM", "Absorbed Dose")
MEAN_TRANSIT_TIME = Coded("113052", "DCM", "Mean Transit Time")
TIME_TO_PEAK = Coded("113069", "DCM", "Time To Peak")

# ----------------------------------------------------------------- CT perfusion parameters (perfusion and MAA reports)
#: Units of the perfusion parameters (as the Parametric Maps declare them).
PERFUSION_UNITS = {"ALP": "mL/min/(100.mL)", "PVP": "mL/min/(100.mL)", "TLP": "mL/min/(100.mL)", "HPI": "%",
                   "DV": "%", "MTT": "s"}
PARAMETER_CONCEPTS: dict[str, Coded] = {
    "ALP": private("LN-ALP", "Arterial liver perfusion"),
    "PVP": private("LN-PVP", "Portal venous perfusion"),
    # total blood flow per volume of tissue: DICOM's "Absolute Regional Blood Flow" (CID 4108)
    "TLP": Coded("126390", "DCM", "Absolute Regional Blood Flow"),
    "HPI": private("LN-HPI", "Hepatic perfusion index"),
    "DV": private("LN-DV", "Distribution volume"),
    "MTT": MEAN_TRANSIT_TIME,
}
#: DICOM's "Maximum Slope" (CID 4109); the dual input (aorta and portal vein) is said in the parameters
MAX_SLOPE = Coded("126375", "DCM", "Maximum Slope")
DISCM = private("LN-M-DISCM", "Dual-input single-compartment model (Materne)")
#: Method names as the perfusion records and Parametric Maps spell them -> method code.
METHOD_CODES: dict[str, Coded] = {"max-slope": MAX_SLOPE, "maxslope": MAX_SLOPE, "discm": DISCM}

# ----------------------------------------------------------------- dose-volume figures (Y-90 and plan doses)
# DICOM CID 10061 (absorbed radiation dose types) names Dmean, Dmin, Dmax and the median (D50); Dx and Vx have no
# standard code.
MEAN_DOSE = Coded("128533", "DCM", "Mean Absorbed Radiation Dose")
MIN_DOSE = Coded("128532", "DCM", "Minimum Absorbed Radiation Dose")
MAX_DOSE = Coded("128531", "DCM", "Maximum Absorbed Radiation Dose")
MEDIAN_DOSE = Coded("128539", "DCM", "Median Absorbed Radiation Dose")
DOSE_D70 = private("LN-D70", "Minimum dose to the hottest 70 % of the volume")
DOSE_D90 = private("LN-D90", "Minimum dose to the hottest 90 % of the volume")
RATIO = Coded("118586006", "SCT", "Ratio")  # delivered / predicted
DOSE_DIFFERENCE = private("LN-DDIFF", "Absorbed dose difference")  # delivered - predicted
ADMINISTERED_ACTIVITY = Coded("113507", "DCM", "Administered activity")


def volume_receiving(dose_gy: float) -> Coded:
    """Vx: percent of a region's volume receiving at least `dose_gy` (V100 Gy, V30 Gy, FLV20Gy ...)."""
    return private(f"LN-V{dose_gy:g}GY", f"Percent volume receiving at least {dose_gy:g} Gy")


# ----------------------------------------------------------------- qualitative evaluations (safety flags)
NORMALITY = Coded("121402", "DCM", "Normality")  # against the limit stated in the group's parameters
ABOVE_RANGE = Coded("281302008", "SCT", "Above reference range")
BELOW_RANGE = Coded("281300000", "SCT", "Below reference range")

# ----------------------------------------------------------------- methods used by several workflows
REGION_VOLUME = Coded("126030", "DCM", "Sum of segmented voxel method for volume")
DVH_METHOD = private("LN-M-DVH", "Cumulative DVH, structure voxels, trilinear dose")

# ----------------------------------------------------------------- anatomy (finding sites and types)
LIVER = Coded("10200004", "SCT", "Liver")
LUNG = Coded("39607008", "SCT", "Lung")
AORTA = Coded("15825003", "SCT", "Aorta")
PORTAL_VEIN = Coded("32764006", "SCT", "Portal vein")
SPLEEN = Coded("78961009", "SCT", "Spleen")
TUMOUR = Coded("108369006", "SCT", "Tumor")

# ----------------------------------------------------------------- qualifiers
#: Numeric value qualifier (CID 42) of a value reported as not measurable (e.g. at this image noise)
NOT_MEASURABLE = Coded("114011", "DCM", "Value indeterminate")

_DERIVATIONS = {"mean": Coded("373098007", "SCT", "Mean"), "sd": Coded("386136009", "SCT", "Standard Deviation")}

_UNIT_MEANINGS = {
    "{ratio}": "ratio", "1": "no units", "%": "percent", "mL": "milliliter", "cm3": "cubic centimeter",
    "g": "gram", "GBq": "gigabecquerel", "Gy": "gray", "s": "second", "[hnsf'U]": "Hounsfield unit",
    "mL/min/(100.mL)": "mL/min/100 mL",
}


#: Default precision (decimal places) of a value by its UCUM unit: what the measurement can support, and what
#: the SR states (no "25.3483000000000"). An item may set its own (``Item.decimals``).
DECIMALS: dict[str, int] = {
    "{ratio}": 2, "1": 2, "%": 1, "mL": 1, "cm3": 1, "g": 0, "GBq": 2, "Gy": 1, "s": 1, "[hnsf'U]": 1,
    "mL/min/(100.mL)": 1,
}


def decimals_of(unit_code: str, decimals: int | None = None) -> int:
    """The precision of a value in `unit_code` (3 decimals for a unit without a default)."""
    return decimals if decimals is not None else DECIMALS.get(unit_code, 3)


def rounded(value: float, unit_code: str, decimals: int | None = None) -> float:
    """`value` rounded to its precision (-0.0 becomes 0.0)."""
    return round(float(value), decimals_of(unit_code, decimals)) + 0.0


def concept(code: Coded) -> CodedConcept:
    """The highdicom concept of `code` (measurement names, methods, sites, procedures alike)."""
    return CodedConcept(code.value, code.scheme, code.meaning)


def unit(code: str) -> CodedConcept:
    """A UCUM unit concept."""
    return CodedConcept(code, "UCUM", _UNIT_MEANINGS.get(code, code))


def derivation(key: str) -> CodedConcept:
    """"mean" or "sd" as a derivation concept."""
    return concept(_DERIVATIONS[key])
