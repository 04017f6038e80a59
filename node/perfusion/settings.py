"""Settings of the CT perfusion workflow: the ``[analysis.perfusion]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigError, ConfigTable
from node.workflow import CommonSettings

__all__ = ["PERFUSION_METHODS", "InputRoiOverride", "PerfusionSettings", "parse_settings"]

PERFUSION_METHODS = ("max-slope", "discm")


@dataclass(frozen=True)
class InputRoiOverride:
    """A sphere in patient coordinates (mm) that replaces automatic input-curve detection."""

    center_mm: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class PerfusionSettings:
    methods: tuple[str, ...] = PERFUSION_METHODS  # "max-slope" and/or "discm"
    #: a region value whose 95 % interval (+-1.96 SD of image noise and model misfit) spans more than this fraction
    #: of the value is reported as not measurable (node.perfusion.qualify)
    tolerance: float = 0.15
    aorta: InputRoiOverride | None = None
    portal_vein: InputRoiOverride | None = None
    spleen: InputRoiOverride | None = None
    liver_roi_names: tuple[str, ...] = CommonSettings.liver_roi_names  # from [analysis] liver_roi_names


def _roi_override(table: ConfigTable, name: str) -> InputRoiOverride | None:
    if not table.has(name):
        table.get(name)
        return None
    sub = ConfigTable(table.key(name), table.get(name))
    c = sub.get("center_mm")
    if not isinstance(c, list) or len(c) != 3 or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                         for x in c):
        raise ConfigError(sub.key("center_mm"), f"must be [x, y, z] in mm, got {c!r}")
    r = sub.number("radius_mm", 5.0, lo=0.0, lo_open=True)
    sub.finish()
    return InputRoiOverride(center_mm=(float(c[0]), float(c[1]), float(c[2])), radius_mm=r)


def parse_settings(table: ConfigTable, common: CommonSettings) -> PerfusionSettings:
    methods = table.strings("methods", PERFUSION_METHODS)
    for i, m in enumerate(methods):
        if m not in PERFUSION_METHODS:
            raise ConfigError(f"{table.key('methods')}[{i}]", f"unknown method {m!r}; use {list(PERFUSION_METHODS)}")
    settings = PerfusionSettings(methods=methods,
                                 tolerance=table.number("tolerance", 0.15, lo=0.0, lo_open=True, hi=1.0),
                                 aorta=_roi_override(table, "aorta"),
                                 portal_vein=_roi_override(table, "portal_vein"), spleen=_roi_override(table, "spleen"),
                                 liver_roi_names=common.liver_roi_names)
    table.finish()
    return settings
