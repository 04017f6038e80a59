"""Every object a phantom case delivers, read as a radiologist's PACS and a planning system would get it
(tests/opscase.py: the phantom patient through a running node to two folder destinations):

- every page (Secondary Capture) is 1920 x 1080 RGB, burns the patient identity into its header and says so
  (BurnedInAnnotation YES exactly where the header holds text);
- the uptake pages (GSA, MAA) carry a colour bar of the uptake scale, the perfusion map pages the scale of every
  quantity they show;
- one name per lesion: the tumour names of the SR, of the MAA structure set, of the summary page and of the
  perfusion RTSTRUCT the node received are the same;
- no ROI is typed GTV/CTV/PTV except the GSA targets (ITV, PTV);
- dciodvfy reports no error on any object; highdicom reads the SR back, with its standard codes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import matplotlib
import numpy as np
import pydicom
import pytest

import rtstruct
from node.imaging.pages import PAGE_PX, UPTAKE_CMAP
from node.perfusion.pages import SCALES
from testpeers.orthanc import dciodvfy_errors

pytestmark = [pytest.mark.network, pytest.mark.slow]
SC = "1.2.840.10008.5.1.4.1.1.7"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def delivered(ops_case) -> dict[Path, pydicom.Dataset]:
    results = Path(ops_case.config.node.data_dir) / "results"
    files = sorted(results.rglob("*.dcm"))
    assert files, f"nothing delivered under {results}"
    return {p: pydicom.dcmread(p) for p in files}


def _of(delivered: dict[Path, pydicom.Dataset], sop_class: str) -> list[pydicom.Dataset]:
    return [ds for ds in delivered.values() if ds.SOPClassUID == sop_class]


def test_every_page_is_full_hd_with_the_identity_it_declares(delivered) -> None:
    pages = _of(delivered, SC)
    assert len(pages) >= 5  # perfusion, GSA axial + coronal, MAA, summary
    for ds in pages:
        rgb = ds.pixel_array
        assert rgb.shape == (PAGE_PX[1], PAGE_PX[0], 3), ds.SeriesDescription
        # the header's right-hand block (patient name, ID, birth date, study date, series) holds light text...
        header = rgb[:90, PAGE_PX[0] - 700:].mean(axis=2)
        holds_text = int((header > 150).sum()) > 500
        # ...exactly when the object declares burned-in identifying text
        assert holds_text == (ds.BurnedInAnnotation == "YES"), ds.SeriesDescription
        assert ds.BurnedInAnnotation == "YES"
        assert "DERIVED" in ds.ImageType and "not for primary diagnosis" in ds.SeriesDescription.lower()
        # dark pages: the background is black
        assert (rgb.mean(axis=2) < 20).mean() > 0.35, ds.SeriesDescription


def _has_scale(region: np.ndarray, cmap: Any, steps: int = 9, tolerance: float = 18.0) -> bool:
    """True when every colour of the scale (steps between 5 % and 95 %) appears somewhere in `region`."""
    pixels = region.reshape(-1, 3).astype(float)
    for t in np.linspace(0.05, 0.95, steps):
        colour = np.asarray(cmap(float(t))[:3]) * 255.0
        if not (np.abs(pixels - colour).sum(axis=1) < tolerance).any():
            return False
    return True


def test_uptake_pages_carry_the_uptake_colour_bar(delivered) -> None:
    uptake_pages = [ds for ds in _of(delivered, SC)
                    if ds.SeriesDescription.startswith(("GSA", "MAA"))]
    assert len(uptake_pages) == 3  # GSA axial, GSA coronal, MAA
    for ds in uptake_pages:
        info_column = ds.pixel_array[100:1040, 1430:]
        assert _has_scale(info_column, UPTAKE_CMAP), ds.SeriesDescription


def test_perfusion_map_pages_carry_the_scale_of_every_quantity(delivered) -> None:
    """Each map page shows every quantity's colour bar: the same fixed scales for both methods."""
    expected = {"Perfusion, maximum slope": ("ALP", "PVP", "TLP", "HPI"),
                "Perfusion, DISCM": ("ALP", "PVP", "TLP", "HPI", "DV", "MTT")}
    for prefix, quantities in expected.items():
        pages = [ds for ds in _of(delivered, SC) if ds.SeriesDescription.startswith(prefix)]
        assert pages, prefix
        for ds in pages:
            panels = ds.pixel_array[100:1040, :1430]
            for cmap in {SCALES[q].cmap for q in quantities}:
                assert _has_scale(panels, matplotlib.colormaps[cmap]), (ds.SeriesDescription, cmap)


def _sr_regions(delivered) -> dict[str, set[str]]:
    (sr_ds,) = _of(delivered, SR)
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    out: dict[str, set[str]] = {}
    for group in cast(Any, sr.content).get_image_measurement_groups():
        name, _, where = str(group.tracking_identifier).rpartition(" (")
        finding = group.finding_type
        if finding is not None and finding.meaning == "Tumor":
            out.setdefault(where.rstrip(")"), set()).add(name)
    return out


def test_one_name_per_lesion_in_sr_structure_sets_and_summary(delivered, ops_case) -> None:
    received = pydicom.dcmread(next((ops_case.phantom / "perfusion-rtstruct").glob("*.dcm")))
    lesions = {n for n in rtstruct.roi_names(received) if n.startswith("T")}
    assert lesions == {"T1", "T2", "T3"}
    sr = _sr_regions(delivered)
    assert sr["MAA SPECT"] == lesions and sr["CT perfusion"] == lesions
    maa = next(ds for ds in _of(delivered, RTSTRUCT) if ds.StructureSetLabel == "MAA REGIONS")
    types = rtstruct.roi_interpreted_types(maa)
    assert {n for n, t in types.items() if t == "CONTROL"} == lesions
    summary = next(ds for ds in _of(delivered, SC) if ds.SeriesDescription.startswith("Case summary"))
    text = str(summary.ImageComments)
    tumour_table = text.split("Tumours\n", 1)[1].split("\n")
    assert {line.split(" | ")[0] for line in tumour_table[1:4]} == lesions
    # the search's provisional names (H1, H2 ...) never reach a page or the SR
    assert not any(f"H{n}" in str(ds.get("ImageComments", "")).split() for ds in _of(delivered, SC) for n in (1, 2, 3))
    # the same lesion is tracked as one finding in the SR: its perfusion and MAA groups share the Tracking UID
    (sr_ds,) = _of(delivered, SR)
    uids: dict[str, set[str]] = {}
    for group in cast(Any, hd.sr.Comprehensive3DSR.from_dataset(sr_ds).content).get_image_measurement_groups():
        name = str(group.tracking_identifier).rpartition(" (")[0]
        uids.setdefault(name, set()).add(str(group.tracking_uid))
    assert all(len(uids[n]) == 1 for n in lesions)


def test_every_page_speaks_one_vocabulary(delivered) -> None:
    """Method and region names, as the summary's and the pages' text carry them: one spelling each; typographic
    signs; a value's SD never "± 0"."""
    pages = _of(delivered, SC)
    text = "\n".join(str(ds.get("ImageComments", "")) + " " + str(ds.SeriesDescription) for ds in pages)
    for spelling in ("MaxSlope", "max-slope", "maxslope", "max slope", "one-compartment", "non-tumoural"):
        assert spelling not in text, spelling
    summary = "\n".join(str(ds.ImageComments) for ds in pages if ds.SeriesDescription.startswith("Case summary"))
    assert "maximum slope" in summary and "DISCM" in summary and "Normal liver" in summary
    assert not re.search(r">=|<=|\+-|\bcm3\b|\bmm2\b|\u00b1 0(?![.\d])", summary)


def test_no_roi_is_a_target_unless_it_is_a_gsa_target(delivered) -> None:
    sets = _of(delivered, RTSTRUCT)
    assert {ds.StructureSetLabel for ds in sets} == {"GSA TARGETS", "MAA REGIONS"}
    targets = {(ds.StructureSetLabel, name) for ds in sets for name, kind in rtstruct.roi_interpreted_types(ds).items()
               if kind in ("GTV", "CTV", "PTV")}
    assert targets == {("GSA TARGETS", "ITV"), ("GSA TARGETS", "PTV")}


def test_dciodvfy_finds_no_error_in_any_object(delivered) -> None:
    for path in delivered:
        assert dciodvfy_errors(path) == [], path.name


def test_sr_reads_back_with_standard_codes(delivered) -> None:
    (sr_ds,) = _of(delivered, SR)
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    concepts = set()
    for group in cast(Any, sr.content).get_image_measurement_groups():
        for m in group.get_measurements():
            concepts.add((m.name.scheme_designator, m.name.meaning))
            concepts.add((m.unit.scheme_designator, m.unit.value))
            assert len(str(m[0].MeasuredValueSequence[0].NumericValue)) <= 8
    assert {("SCT", "Volume"), ("DCM", "Absorbed Dose"), ("DCM", "Time To Peak"), ("UCUM", "mL/min/(100.mL)"),
            ("UCUM", "{ratio}")} <= concepts
    schemes = {item.CodingSchemeDesignator for item in sr_ds.get("CodingSchemeIdentificationSequence", [])}
    assert "99LIVERNODE" in schemes  # the private scheme is declared
