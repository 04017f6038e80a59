"""Coded concepts of the case report: measurement names, methods, anatomy and UCUM units.

Standard codes (SNOMED CT, DICOM) where one exists; otherwise a private coding scheme (PS3.16 8.2: a
designator starting with "99") whose values are stable, so a receiving system can map them once.
"""
from __future__ import annotations

from highdicom.sr import CodedConcept

__all__ = ["PRIVATE_SCHEME", "NOT_MEASURABLE", "concept", "unit", "method", "site", "derivation", "procedure",
           "CONCEPTS", "METHODS"]

PRIVATE_SCHEME = "99LIVERNODE"

#: Measurement names: key -> (value, scheme, meaning).
CONCEPTS: dict[str, tuple[str, str, str]] = {
    "volume": ("118565006", "SCT", "Volume"),
    "mass": ("118538004", "SCT", "Mass"),
    "absorbed_dose": ("128513", "DCM", "Absorbed Dose"),
    "mtt": ("113052", "DCM", "Mean Transit Time"),
    "tn_ratio": ("LN-TNR", PRIVATE_SCHEME, "Tumor to normal liver uptake ratio"),
    "tn_ratio_uncorrected": ("LN-TNR-U", PRIVATE_SCHEME, "Tumor to normal liver uptake ratio, uncorrected"),
    "lsf": ("LN-LSF", PRIVATE_SCHEME, "Lung shunt fraction"),
    "activity": ("LN-Y90-A", PRIVATE_SCHEME, "Planned Y-90 activity"),
    "activity_normal_limit": ("LN-Y90-AN", PRIVATE_SCHEME, "Y-90 activity at the normal liver dose limit"),
    "activity_lung_limit": ("LN-Y90-AL", PRIVATE_SCHEME, "Y-90 activity at the lung dose limit"),
    "ALP": ("LN-ALP", PRIVATE_SCHEME, "Arterial liver perfusion"),
    "PVP": ("LN-PVP", PRIVATE_SCHEME, "Portal venous perfusion"),
    "TLP": ("LN-TLP", PRIVATE_SCHEME, "Total liver perfusion"),
    "HPI": ("LN-HPI", PRIVATE_SCHEME, "Hepatic perfusion index"),
    "DV": ("LN-DV", PRIVATE_SCHEME, "Distribution volume"),
    "analysed_volume": ("LN-VOLA", PRIVATE_SCHEME, "Analysed volume"),
    "peak_enhancement": ("LN-PEAK", PRIVATE_SCHEME, "Peak contrast enhancement"),
    "time_to_peak": ("LN-TTP", PRIVATE_SCHEME, "Time to peak enhancement"),
    "t_spl": ("LN-TSPL", PRIVATE_SCHEME, "Arterial/portal phase split time"),
    "pearson_r": ("LN-R-TN-ALP", PRIVATE_SCHEME, "Correlation coefficient T/N vs ALP"),
}

#: Methods: key -> (value, meaning <= 64 characters).
METHODS: dict[str, tuple[str, str]] = {
    "tn-gtm": ("LN-M-TNGTM", "Counts/mL ratio, PVC by transfer matrix in tumour cells"),
    "tn-plain": ("LN-M-TNRAW", "Ratio of mean counts inside contours, no PVC"),
    "region-volume": ("LN-M-VOL", "Sum of voxel (partial) volumes of the region"),
    "mass-density": ("LN-M-MASS", "Region volume x tissue density"),
    "partition-model": ("LN-M-PART", "Partition model (Ho 1996), Y-90 49.67 Gy kg/GBq"),
    "lsf-spect": ("LN-M-LSFS", "SPECT/CT lung and liver counts"),
    "lsf-config": ("LN-M-LSFC", "Configured value (e.g. from planar imaging)"),
    "max-slope": ("LN-M-MAXSL", "Dual-input maximum slope (Blomley, direct)"),
    "discm": ("LN-M-DISCM", "Dual-input single-compartment model (Materne)"),
    "curve-peak": ("LN-M-PEAK", "Peak of the ROI mean time-attenuation curve"),
    "fls-threshold": ("LN-M-FLS", "GSA SPECT >= threshold x liver maximum"),
    "itv": ("LN-M-ITV", "Whole liver minus FLS"),
    "ptv": ("LN-M-PTV", "ITV grown by an isotropic margin"),
    "liver-contour": ("LN-M-LIVER", "Whole liver contour"),
    "pearson": ("LN-M-PEARSON", "Pearson correlation over tumours"),
}

_SITES: dict[str, tuple[str, str, str]] = {
    "liver": ("10200004", "SCT", "Liver"),
    "lung": ("39607008", "SCT", "Lung"),
    "aorta": ("15825003", "SCT", "Aorta"),
    "portal_vein": ("32764006", "SCT", "Portal vein"),
    "spleen": ("78961009", "SCT", "Spleen"),
    "tumour": ("108369006", "SCT", "Tumor"),
}

#: Numeric value qualifier (CID 42) of a value reported as not measurable (e.g. at this image noise)
NOT_MEASURABLE = CodedConcept("114011", "DCM", "Value indeterminate")

_DERIVATIONS = {"mean": ("373098007", "SCT", "Mean"), "sd": ("386136009", "SCT", "Standard Deviation")}

_PROCEDURES: dict[str, tuple[str, str]] = {
    "perfusion": ("LN-P-CTP", "Liver CT perfusion"),
    "gsa": ("LN-P-GSA", "GSA SPECT functional liver targets for SBRT"),
    "maa": ("LN-P-MAA", "MAA SPECT planning of Y-90 radioembolization"),
}

_UNIT_MEANINGS = {
    "{ratio}": "ratio", "1": "no units", "%": "percent", "mL": "milliliter", "cm3": "cubic centimeter",
    "g": "gram", "GBq": "gigabecquerel", "Gy": "gray", "s": "second", "[hnsf'U]": "Hounsfield unit",
    "mL/min/(100.mL)": "mL/min/100 mL",
}


def concept(key: str) -> CodedConcept:
    """The measurement name for `key` (see CONCEPTS)."""
    value, scheme, meaning = CONCEPTS[key]
    return CodedConcept(value, scheme, meaning)


def unit(code: str) -> CodedConcept:
    """A UCUM unit concept."""
    return CodedConcept(code, "UCUM", _UNIT_MEANINGS.get(code, code))


def method(key: str) -> CodedConcept:
    value, meaning = METHODS[key]
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


def site(key: str) -> CodedConcept:
    value, scheme, meaning = _SITES[key]
    return CodedConcept(value, scheme, meaning)


def derivation(key: str) -> CodedConcept:
    value, scheme, meaning = _DERIVATIONS[key]
    return CodedConcept(value, scheme, meaning)


def procedure(key: str) -> CodedConcept:
    value, meaning = _PROCEDURES[key]
    return CodedConcept(value, PRIVATE_SCHEME, meaning)
