"""Configuration: the shipped file works; every mistake stops start-up with a message naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.config import ConfigError, load_config, parse_config
from node.gsa.workflow import GSA
from node.gsaplan.workflow import GSAPLAN
from node.maa.workflow import MAA
from node.perfusion.workflow import PERFUSION
from node.y90post.workflow import Y90POST

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_is_valid_and_runs_without_a_pacs() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert cfg.node.ae_title == "LIVERNODE" and cfg.node.port == 11112
    assert cfg.node.data_dir == ROOT / "var"
    assert cfg.security.allowed_calling_aes == ()
    assert cfg.completion.stable_seconds == 30
    gsa = cfg.analysis.settings_for(GSA)
    assert gsa.fls_threshold == pytest.approx(0.60) and gsa.ptv_margin_mm == 5.0
    assert cfg.notices == ()  # the shipped file uses the current layout
    # embedded default: results go to folders under data_dir, no network peer needed
    assert {d.kind for d in cfg.destinations} == {"folder"}
    assert all(str(d.folder).startswith(str(cfg.node.data_dir)) for d in cfg.destinations)
    assert {k for d in cfg.destinations for k in d.outputs} == {"parametric-map", "secondary-capture", "report",
                                                               "rtstruct", "rtdose"}
    assert cfg.unrouted_outputs() == ()  # every kind the registered workflows produce has a destination


def test_issue_keys_parse() -> None:
    cfg = parse_config({
        "node": {"ae_title": "LIVERNODE", "host": "0.0.0.0", "port": 11112, "data_dir": "var"},
        "security": {"allowed_calling_aes": ["CT1", "PACS"]},
        "completion": {"stable_seconds": 30},
        "analysis": {"fls_threshold": 0.6, "ptv_margin_mm": 5.0},
        "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242,
                                  "outputs": ["parametric-map", "secondary-capture", "report"]}},
    }, base_dir=Path("/srv"))
    (pacs,) = cfg.destinations
    assert pacs.kind == "dicom" and pacs.port == 4242 and pacs.ae_title == "PACS"
    assert cfg.security.allowed_calling_aes == ("CT1", "PACS")
    assert cfg.destinations_for("report") == (pacs,) and cfg.destinations_for("rtstruct") == ()


@pytest.mark.parametrize("raw, key", [
    ({"node": {"prot": 104}}, "node.prot"),
    ({"nodes": {}}, "nodes"),
    ({"node": {"port": 70000}}, "node.port"),
    ({"node": {"port": "11112"}}, "node.port"),
    ({"node": {"ae_title": "A_TITLE_THAT_IS_TOO_LONG"}}, "node.ae_title"),
    ({"node": {"log_level": "LOUD"}}, "node.log_level"),
    ({"security": {"allowed_calling_aes": "CT1"}}, "security.allowed_calling_aes"),
    ({"completion": {"stable_seconds": 0}}, "completion.stable_seconds"),
    ({"analysis": {"fls_threshold": 1.5}}, "analysis.fls_threshold"),
    ({"analysis": {"perfusion_methods": ["deconvolution"]}}, "analysis.perfusion_methods[0]"),
    ({"analysis": {"aorta": {"center_mm": [1, 2]}}}, "analysis.aorta.center_mm"),
    ({"analysis": {"gsa": {"fls_threshold": 1.5}}}, "analysis.gsa.fls_threshold"),
    ({"analysis": {"gsa": {"fls_treshold": 0.5}}}, "analysis.gsa.fls_treshold"),
    ({"analysis": {"perfusion": {"methods": ["deconvolution"]}}}, "analysis.perfusion.methods[0]"),
    ({"analysis": {"perfusion": {"tolerance": 0}}}, "analysis.perfusion.tolerance"),
    ({"analysis": {"perfusion_tolerance": 1.5}}, "analysis.perfusion_tolerance"),
    ({"analysis": {"perfusion": {"spleen": {"center_mm": [1, 2, 3], "radius_mm": 0}}}},
     "analysis.perfusion.spleen.radius_mm"),
    ({"analysis": {"maa": {"lung_shunt_fraction": 1.5}}}, "analysis.maa.lung_shunt_fraction"),
    ({"analysis": {"maa": "yes"}}, "analysis.maa"),
    ({"analysis": {"fls_threshold": 0.5, "gsa": {"fls_threshold": 0.6}}}, "analysis.fls_threshold"),
    ({"analysis": {"parametric_map_fallback": "jpeg"}}, "analysis.parametric_map_fallback"),
    ({"analysis": {"maa": {"sphere_type": "ceramic"}}}, "analysis.maa.sphere_type"),
    ({"analysis": {"maa": {"prescribed_activity_gbq": 0}}}, "analysis.maa.prescribed_activity_gbq"),
    ({"analysis": {"maa": {"bilobar": "yes"}}}, "analysis.maa.bilobar"),
    ({"analysis": {"maa": {"dose_limits": {"normal_liver_max_gy": -1}}}},
     "analysis.maa.dose_limits.normal_liver_max_gy"),
    ({"analysis": {"maa": {"dose_limits": {"tumour_minimum_gy": 90}}}}, "analysis.maa.dose_limits.tumour_minimum_gy"),
    ({"analysis": {"maa": {"dose_limits": {"normal_liver_compromised_max_gy": 50}}}}, "analysis.maa.dose_limits"),
    ({"analysis": {"maa": {"ct_density": {"hu": [0, -10], "density_g_per_ml": [1, 1]}}}},
     "analysis.maa.ct_density"),
    ({"analysis": {"maa": {"ct_density": {"hu": "linear"}}}}, "analysis.maa.ct_density.hu"),
    ({"analysis": {"y90post": {"mismatch_warning": 0}}}, "analysis.y90post.mismatch_warning"),
    ({"analysis": {"gsaplan": {"flv_warning_percent": 120}}}, "analysis.gsaplan.flv_warning_percent"),
    ({"destinations": {"tps": {"folder": "x", "outputs": ["rt-dose"]}}}, "destinations.tps.outputs[0]"),
    ({"outbox": {"parametric_map_fallback": "jpeg"}}, "outbox.parametric_map_fallback"),
    ({"destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "outputs": ["report"]}}},
     "destinations.pacs.port"),
    ({"destinations": {"pacs": {"ae_title": "PACS", "host": "h", "port": 1, "outputs": ["maps"]}}},
     "destinations.pacs.outputs[0]"),
    ({"destinations": {"pacs": {"ae_title": "PACS", "host": "h", "port": 1, "outputs": []}}},
     "destinations.pacs.outputs"),
    ({"destinations": {"tps": {"folder": "x", "port": 104, "outputs": ["rtstruct"]}}}, "destinations.tps.port"),
    ({"destinations": {"tps": {"ae_title": "TPS", "host": "h", "port": 104, "outputs": ["rtstruct"],
                               "tls": {"cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"}}}},
     "destinations.tps.tls.cert_file"),
    ({"receive": {"duplicates": "overwrite"}}, "receive.duplicates"),
    ({"classify": {"tracers": {"Tc-99m MDP": ["bone"]}}}, 'classify.tracers."Tc-99m MDP"'),
    ({"classify": {"tracers": {"Tc-99m MAA": "MAA"}}}, 'classify.tracers."Tc-99m MAA"'),
    ({"classify": {"tracers": {"Tc-99m MAA": ["(MAA"]}}}, 'classify.tracers."Tc-99m MAA"[0]'),
    ({"classify": {"tracer_fields": ["SeriesDescription", "BodyPartExamined"]}}, "classify.tracer_fields[1]"),
    ({"classify": {"tracer": {}}}, "classify.tracer"),
])
def test_bad_configuration_names_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, base_dir=Path("/tmp"))
    assert exc.value.key == key
    assert f"'{key}'" in str(exc.value)


def test_serve_refuses_bad_config_with_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[node]\nport = 11112\n[destinations.pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\n'
                   'outputs = ["report"]\n')
    r = subprocess.run([sys.executable, "-m", "node", "serve", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "destinations.pacs.port" in r.stderr and "required" in r.stderr


def test_unparseable_file_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[node\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(cfg)


def test_workflow_tables_parse_into_each_workflows_settings() -> None:
    cfg = parse_config({"analysis": {
        "liver_roi_names": ["LIVER_CONTOUR"],
        "perfusion": {"methods": ["discm"], "aorta": {"center_mm": [1, 2, 3], "radius_mm": 6}},
        "gsa": {"fls_threshold": 0.5, "ptv_margin_mm": 3.0},
        "maa": {"lung_shunt_fraction": 0.07, "normal_liver_dose_gy": 40.0},
    }}, base_dir=Path("/tmp"))
    perfusion, gsa, maa = (cfg.analysis.settings_for(PERFUSION), cfg.analysis.settings_for(GSA),
                           cfg.analysis.settings_for(MAA))
    assert perfusion.methods == ("discm",) and perfusion.aorta is not None and perfusion.aorta.radius_mm == 6.0
    assert (gsa.fls_threshold, gsa.ptv_margin_mm) == (0.5, 3.0)
    assert (maa.lung_shunt_fraction, maa.normal_liver_dose_gy, maa.lung_dose_limit_gy) == (0.07, 40.0, None)
    targets = maa.partition_targets  # the site's normal-liver dose, the lungs at the safety limit
    assert (targets.normal_liver_gy, targets.normal_liver_from, targets.lung_gy) == (40.0, "site setting", 30.0)
    assert perfusion.liver_roi_names == gsa.liver_roi_names == maa.liver_roi_names == ("LIVER_CONTOUR",)
    assert cfg.notices == ()


def test_dose_settings_choose_the_sphere_types_limits_and_a_site_may_change_them() -> None:
    cfg = parse_config({"analysis": {
        "maa": {"sphere_type": "glass", "bilobar": True, "prior_lung_dose_gy": 12.0, "prescribed_activity_gbq": 2.5,
                "dose_limits": {"tumour_min_gy": 150.0},
                "ct_density": {"name": "CT1", "hu": [-1000, 0, 1000], "density_g_per_ml": [0.001, 1.0, 1.6]}},
        "y90post": {"mismatch_warning": 0.3}, "gsaplan": {"threshold_gy": 15.0}},
        "destinations": {"tps": {"folder": "tps", "outputs": ["rtstruct", "rtdose"]}}}, base_dir=Path("/tmp"))
    maa = cfg.analysis.settings_for(MAA)
    assert maa.sphere_type.value == "glass" and maa.prescribed_activity_gbq == 2.5
    assert maa.dose_limits.tumour_min_gy == 150.0 and maa.dose_limits.normal_liver_max_gy == 70.0  # glass default
    assert "site changes: tumour_min_gy = 150" in maa.dose_limits.source
    assert maa.treatment.bilobar and maa.treatment.prior_lung_dose_gy == 12.0
    assert maa.ct_density.name == "CT1" and float(maa.ct_density.density(np.array([500.0]))[0]) == pytest.approx(1.3)
    assert cfg.analysis.settings_for(Y90POST).mismatch_warning == 0.3
    assert cfg.analysis.settings_for(GSAPLAN).threshold_gy == 15.0
    assert [d.name for d in cfg.destinations_for("rtdose")] == ["tps"]
    resin = parse_config({}, base_dir=Path("/tmp")).analysis.settings_for(MAA)
    assert resin.sphere_type.value == "resin" and resin.dose_limits.normal_liver_max_gy == 40.0


def test_partition_limits_default_to_the_safety_limits_of_the_sphere_type_and_treatment() -> None:
    """Without normal_liver_dose_gy / lung_dose_limit_gy the plan targets exactly what the safety check flags
    above: the node's own plan is not flagged by its own check."""
    def targets(maa: dict[str, Any]) -> tuple[float, float, str]:
        t = parse_config({"analysis": {"maa": maa}}, base_dir=Path("/tmp")).analysis.settings_for(MAA).partition_targets
        return t.normal_liver_gy, t.lung_gy, t.basis

    assert targets({}) == (40.0, 30.0, "normal liver 40 Gy (resin safety limit, unilobar), lungs 30 Gy (safety "
                                       "limit per session)")
    assert targets({"bilobar": True})[:2] == targets({"compromised_liver": True})[:2] == (30.0, 30.0)
    assert targets({"sphere_type": "glass"})[:2] == (70.0, 30.0)
    assert targets({"dose_limits": {"normal_liver_max_gy": 45.0}})[:2] == (45.0, 30.0)  # a site's own limit
    nl, lung, basis = targets({"prior_lung_dose_gy": 35.0})  # 50 Gy cumulative - 35 Gy before
    assert (nl, lung) == (40.0, 15.0) and "50 Gy cumulative - 35 Gy before" in basis
    assert targets({"prior_lung_dose_gy": 60.0})[1] == -10.0  # used up: the MAA workflow makes no plan
    assert targets({"normal_liver_dose_gy": 70.0, "lung_dose_limit_gy": 25.0})[2] == (
        "normal liver 70 Gy (site setting), lungs 25 Gy (site setting)")
    for bad in (0.0, -5.0):
        with pytest.raises(ConfigError, match="normal_liver_dose_gy"):
            targets({"normal_liver_dose_gy": bad})
    shipped = load_config(ROOT / "config.toml").analysis.settings_for(MAA)
    assert (shipped.normal_liver_dose_gy, shipped.lung_dose_limit_gy) == (None, None)


def test_old_flat_analysis_keys_still_work_with_a_deprecation_notice() -> None:
    old = parse_config({"analysis": {"fls_threshold": 0.5, "perfusion_methods": ["max-slope"],
                                     "lung_shunt_fraction": 0.1, "parametric_map_fallback": "none"}},
                       base_dir=Path("/tmp"))
    assert old.analysis.settings_for(GSA).fls_threshold == 0.5
    assert old.analysis.settings_for(PERFUSION).methods == ("max-slope",)
    assert old.analysis.settings_for(MAA).lung_shunt_fraction == 0.1
    assert old.outbox.parametric_map_fallback == "none"  # a delivery setting now
    assert len(old.notices) == 4 and all("deprecated" in n for n in old.notices)
    assert any("[analysis.gsa] fls_threshold" in n for n in old.notices)
    assert any("[analysis.perfusion] methods" in n for n in old.notices)


def test_perfusion_tolerance_is_a_perfusion_setting_and_its_flat_key_still_works() -> None:
    assert parse_config({}, base_dir=Path("/tmp")).analysis.settings_for(PERFUSION).tolerance == 0.15
    new = parse_config({"analysis": {"perfusion": {"tolerance": 0.2}}}, base_dir=Path("/tmp"))
    assert new.analysis.settings_for(PERFUSION).tolerance == 0.2 and new.notices == ()
    old = parse_config({"analysis": {"perfusion_tolerance": 0.1}}, base_dir=Path("/tmp"))
    assert old.analysis.settings_for(PERFUSION).tolerance == 0.1
    assert len(old.notices) == 1 and "[analysis.perfusion] tolerance" in old.notices[0]


def test_parametric_map_fallback_per_destination() -> None:
    cfg = parse_config({"outbox": {"parametric_map_fallback": "none"}, "destinations": {
        "pacs": {"ae_title": "PACS", "host": "h", "port": 1, "outputs": ["parametric-map"],
                 "parametric_map_fallback": "secondary-capture"},
        "other": {"ae_title": "OTHER", "host": "h", "port": 2, "outputs": ["parametric-map"]}}},
        base_dir=Path("/tmp"))
    assert cfg.outbox.parametric_map_fallback == "none"
    assert {d.name: d.parametric_map_fallback for d in cfg.destinations} == {"pacs": "secondary-capture",
                                                                             "other": None}


def test_receive_section_parses_and_names_its_keys() -> None:
    cfg = load_config(ROOT / "config.toml")
    r = cfg.receive
    assert (r.strict, r.negotiation_timeout_seconds, r.network_timeout_seconds) == (False, 5.0, 60.0)
    assert (r.max_negotiating, r.max_negotiating_per_address, r.fast_path) == (32, 8, True)
    assert r.idle_association_seconds == 10.0
    assert cfg.node.max_pdu_size == 4 * 1024 * 1024
    strict = parse_config({"receive": {"strict": True, "negotiation_timeout_seconds": 2}}, base_dir=Path("/tmp"))
    assert strict.receive.strict and strict.receive.negotiation_timeout_seconds == 2.0
    assert parse_config({"node": {"max_pdu_size": 0}}, base_dir=Path("/tmp")).node.max_pdu_size == 0  # old configs
    for raw, key in (({"receive": {"strict": "yes"}}, "receive.strict"),
                     ({"receive": {"negotiation_timeout_seconds": 0}}, "receive.negotiation_timeout_seconds"),
                     ({"receive": {"max_negotiating": 0}}, "receive.max_negotiating"),
                     ({"receive": {"idle_association_seconds": 0}}, "receive.idle_association_seconds"),
                     ({"receive": {"timeout": 5}}, "receive.timeout"),
                     ({"node": {"max_pdu_size": 100}}, "node.max_pdu_size"),
                     ({"node": {"max_pdu_size": 2**31}}, "node.max_pdu_size")):
        with pytest.raises(ConfigError) as exc:
            parse_config(raw, base_dir=Path("/tmp"))
        assert exc.value.key == key


def test_receive_and_classify_keys_parse() -> None:
    cfg = parse_config({"receive": {"duplicates": "keep-first"},
                        "classify": {"tracer_fields": ["SeriesDescription"],
                                     "tracers": {"Tc-99m MAA": [r"\bMAA\b", "lung shunt"], "Tc-99m GSA": ["asialo"]}}})
    assert cfg.receive.duplicates == "keep-first"
    rules = cfg.classify.tracers
    assert rules.fields == ("SeriesDescription",)
    assert [(r.radiopharmaceutical, len(r.patterns)) for r in rules.rules] == [("Tc-99m MAA", 2), ("Tc-99m GSA", 1)]
    assert parse_config({}).receive.duplicates == "replace" and parse_config({}).classify.tracers.rules == ()
