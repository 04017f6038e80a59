"""Settings of the MAA workflow: the ``[analysis.maa]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigTable
from node.workflow import CommonSettings

__all__ = ["MaaSettings", "parse_settings", "SPHERE_TYPES"]

#: Y-90 microsphere products: the partition model is the same, the usual limits differ (glass: normal liver
#: <= 70 Gy; resin: a lower normal-liver limit, e.g. 40 Gy); the pages and the report state which is assumed.
SPHERE_TYPES = ("glass", "resin")


@dataclass(frozen=True)
class MaaSettings:
    normal_liver_dose_gy: float = 70.0  # partition model: normal-liver dose limit
    lung_dose_limit_gy: float = 30.0  # partition model: lung dose limit per session
    lung_shunt_fraction: float | None = None  # from planar imaging, used when the MAA SPECT misses the lungs
    liver_roi_names: tuple[str, ...] = CommonSettings.liver_roi_names  # from [analysis] liver_roi_names
    sphere_type: str = "glass"  # Y-90 microspheres the limits are meant for (stated, not used in the formula)


def parse_settings(table: ConfigTable, common: CommonSettings) -> MaaSettings:
    settings = MaaSettings(
        normal_liver_dose_gy=table.number("normal_liver_dose_gy", 70.0, lo=0.0, lo_open=True, hi=200.0),
        lung_dose_limit_gy=table.number("lung_dose_limit_gy", 30.0, lo=0.0, lo_open=True, hi=200.0),
        lung_shunt_fraction=table.optional_number("lung_shunt_fraction", lo=0.0, hi=0.99),
        liver_roi_names=common.liver_roi_names,
        sphere_type=table.choice("sphere_type", "glass", SPHERE_TYPES),
    )
    table.finish()
    return settings
