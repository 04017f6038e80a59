"""The summary's one format and one vocabulary: values with their SD at the unit's precision (never "± 0"), one
name per perfusion method and per region, every workflow's section as tables (the post-therapy and GSA-plan
doses too), and pages whose texts never run into one another."""
from __future__ import annotations

from node.gsaplan import report as gsaplan_report
from node.imaging.pages import Identity, typographic
from node.perfusion.names import METHOD_LABEL, METHOD_NAME, method_key, method_label
from node.report import codes as C
from node.report.groups import Group, region_name
from node.report.summary import Column, Section, Table, render_pages, summary_lines, with_spread
from node.y90post import report as y90post_report

IDENTITY = Identity("DOE, Jane", "P-SUM", "1950-01-01", "F", "2024-01-01", "", "Case summary")


def test_value_and_sd_at_the_units_precision_never_plus_minus_zero():
    flow = "mL/min/(100.mL)"
    assert with_spread(10.83, 1.26, flow) == "10.8 \u00b1 1.3"
    assert with_spread(10.83, 0.04, flow) == "10.8 \u00b1 <0.1"  # was "11 ± 0" on the map pages
    assert with_spread(70.0, 0.2, "Gy", 0) == "70 \u00b1 <1"
    assert with_spread(70.0, None, "Gy", 0) == "70"  # no SD measured: none printed
    assert with_spread(None, 1.0, "Gy") == "-"


def test_one_name_per_method_from_any_spelling():
    for spelling in ("max-slope", "maxslope", "MaxSlope", "MAXSLOPE", "max slope", "maximum slope"):
        assert method_key(spelling) == "max-slope" and method_label(spelling) == "maximum slope"
    for spelling in ("discm", "DISCM", "single-compartment", "one-compartment model"):
        assert method_key(spelling) == "discm" and method_label(spelling) == "DISCM"
    assert METHOD_NAME["discm"] == "dual-input single-compartment model (DISCM)"
    assert METHOD_NAME["max-slope"] == METHOD_LABEL["max-slope"] == "maximum slope"


def test_one_name_per_region():
    assert {region_name(k) for k in ("non-tumoural liver", "normal liver", "Normal liver")} == {"Normal liver"}
    assert {region_name(k) for k in ("whole liver", "liver", "Liver")} == {"Liver"}
    assert {region_name(k) for k in ("lungs", "Lungs", "lung")} == {"Lungs"}
    assert region_name("T1") == "T1"


def test_typographic_forms():
    assert typographic("uptake >= 60 %, <= 70 Gy, 1.2 +- 0.3, 0.1 cm3, 15 mm2, HU -> g/mL") == \
        "uptake \u2265 60 %, \u2264 70 Gy, 1.2 \u00b1 0.3, 0.1 cm\u00b3, 15 mm\u00b2, HU \u2192 g/mL"
    assert typographic("T2 ALP-max, cm30, V30Gy") == "T2 ALP-max, cm30, V30Gy"
    assert typographic("grid 4.42x4.42 mm; 49.67 Gy kg/GBq x A x LSF; at least x % of it") == \
        "grid 4.42\u00d74.42 mm; 49.67 Gy kg/GBq \u00d7 A \u00d7 LSF; at least x % of it"


def _y90post_groups() -> list[Group]:
    out = []
    for name, means, d70 in (("T1", (300.0, 250.4), (250.0, 200.2)), ("non-tumoural liver", (40.0, 45.3),
                                                                       (30.0, 33.9))):
        g = Group("y90post", f"{y90post_report.GROUP_PREFIX}{name}", C.LIVER, None)
        p, d = means
        g.add(C.MEAN_DOSE, p, "Gy", y90post_report.PREDICTED, "Dmean predicted")
        g.add(C.MEAN_DOSE, d, "Gy", y90post_report.DELIVERED, "Dmean delivered")
        g.add(C.DOSE_DIFFERENCE, d - p, "Gy", y90post_report.DELIVERED_VS_PREDICTED, "Dmean delivered - predicted")
        g.add(C.RATIO, d / p, "{ratio}", y90post_report.DELIVERED_VS_PREDICTED, "Dmean delivered / predicted")
        p, d = d70
        g.add(C.DOSE_D70, p, "Gy", y90post_report.PREDICTED, "D70 predicted")
        g.add(C.DOSE_D70, d, "Gy", y90post_report.DELIVERED, "D70 delivered")
        g.add(C.DOSE_DIFFERENCE, d - p, "Gy", y90post_report.DELIVERED_VS_PREDICTED, "D70 delivered - predicted")
        g.add(C.RATIO, d / p, "{ratio}", y90post_report.DELIVERED_VS_PREDICTED, "D70 delivered / predicted")
        if name == "T1":
            g.evaluations.append((y90post_report.AGREEMENT, C.BELOW_RANGE))
        out.append(g)
    return out


def _gsaplan_groups() -> list[Group]:
    out = []
    for name, volume, mean in (("whole liver", 2058.1, 12.3), ("FLS", 1233.6, 8.4)):
        g = Group("gsaplan", f"{gsaplan_report.GROUP_PREFIX}{name}", C.LIVER, None)
        g.add(C.VOLUME, volume, "mL", C.REGION_VOLUME, "volume")
        g.add(C.MEAN_DOSE, mean, "Gy", gsaplan_report.PLAN_DOSE, "Dmean")
        g.add(C.MEDIAN_DOSE, mean - 1, "Gy", gsaplan_report.PLAN_DOSE, "D50")
        g.add(C.DOSE_D70, mean - 3, "Gy", gsaplan_report.PLAN_DOSE, "D70")
        g.add(C.DOSE_D90, mean - 5, "Gy", gsaplan_report.PLAN_DOSE, "D90")
        g.add(C.volume_receiving(20.0), 11.5, "%", gsaplan_report.PLAN_DOSE, "FLV20Gy" if name == "FLS" else "V20Gy")
        if name == "FLS":
            g.evaluations.append((C.NORMALITY, C.ABOVE_RANGE))
        out.append(g)
    g = Group("gsaplan", gsaplan_report.FUNCTION_GROUP, C.LIVER, None)
    g.add(gsaplan_report.F_PERCENT, 9.5, "%", gsaplan_report.GSA_WEIGHTED, "F20Gy")
    g.add(gsaplan_report.FUNCTIONAL_MEAN, 10.2, "Gy", gsaplan_report.GSA_WEIGHTED, "GSA-weighted mean liver dose")
    return out + [g]


def test_post_therapy_and_plan_dose_sections_are_tables_on_a_clean_page():
    """Both sections were fixed-width text blocks (monospace columns in a proportional font); now tables with
    units, the case-wide region names, flagged ratios, and a page whose texts keep apart."""
    post = y90post_report.summary_section(_y90post_groups())
    plan = gsaplan_report.summary_section(_gsaplan_groups())
    assert isinstance(post[0], Table) and isinstance(plan[0], Table)
    assert post[0].rows[0] == ("T1", "300.0", "250.4", "-49.6", "!0.83", "250.0", "200.2", "-49.8", "0.80")
    assert post[0].rows[1][0] == "Normal liver"
    assert [c.unit for c in post[0].columns][1:4] == ["Gy", "Gy", "Gy"]
    assert plan[0].rows[0][:3] == ("Liver", "2058.1", "12.3") and plan[0].rows[1][-1] == "!11.5"
    lines = summary_lines("CASE", [Section("post", list(post)), Section("plan", list(plan))])
    assert "Normal liver | 40.0 | 45.3 | 5.3 | 1.13 | 30.0 | 33.9 | 3.9 | 1.13" in lines
    assert "F20Gy = 9.5 % of the liver function; GSA-weighted mean liver dose 10.2 Gy." in lines
    pages = render_pages(IDENTITY, [Section("Y-90 post-therapy dosimetry", list(post)),
                                    Section("GSA-guided radiotherapy plan", list(plan))])
    assert len(pages) == 1 and pages[0].overlaps == ()


def test_a_section_that_goes_on_in_the_next_column_says_whose_it_is():
    rows = tuple((f"T{n}", f"{n}.0") for n in range(1, 31))
    tables = [Table((Column("tumour", align="l"), Column("volume", "cm\u00b3")), rows[:15], title="first"),
              Table((Column("tumour", align="l"), Column("volume", "cm\u00b3")), rows[15:], title="second"),
              Table((Column("tumour", align="l"), Column("volume", "cm\u00b3")), rows, title="third")]
    pages = render_pages(IDENTITY, [Section("Liver CT perfusion", list(tables))])
    texts = [t for page in pages for t in page.texts]
    assert "Liver CT perfusion (continued)" in texts
    assert all(page.overlaps == () for page in pages)
