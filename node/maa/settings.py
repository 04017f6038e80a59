"""Settings of the MAA workflow: the ``[analysis.maa]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigTable
from node.workflow import CommonSettings

__all__ = ["MaaSettings", "parse_settings"]


@dataclass(frozen=True)
class MaaSettings:
    normal_liver_dose_gy: float = 70.0  # partition model: normal-liver dose limit
    lung_dose_limit_gy: float = 30.0  # partition model: lung dose limit per session
    lung_shunt_fraction: float | None = None  # from planar imaging, used when the MAA SPECT misses the lungs
    liver_roi_names: tuple[str, ...] = CommonSettings.liver_roi_names  # from [analysis] liver_roi_names


def parse_settings(table: ConfigTable, common: CommonSettings) -> MaaSettings:
    settings = MaaSettings(
        normal_liver_dose_gy=table.number("normal_liver_dose_gy", 70.0, lo=0.0, lo_open=True, hi=200.0),
        lung_dose_limit_gy=table.number("lung_dose_limit_gy", 30.0, lo=0.0, lo_open=True, hi=200.0),
        lung_shunt_fraction=table.optional_number("lung_shunt_fraction", lo=0.0, hi=0.99),
        liver_roi_names=common.liver_roi_names,
    )
    table.finish()
    return settings
