"""Settings of the GSA workflow: the ``[analysis.gsa]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigTable
from node.workflow import CommonSettings

__all__ = ["GsaSettings", "parse_settings"]


@dataclass(frozen=True)
class GsaSettings:
    fls_threshold: float = 0.60  # functional liver = GSA SPECT >= this fraction of its maximum in the liver
    ptv_margin_mm: float = 5.0  # PTV = ITV + this isotropic margin (physical mm)
    liver_roi_names: tuple[str, ...] = CommonSettings.liver_roi_names  # from [analysis] liver_roi_names


def parse_settings(table: ConfigTable, common: CommonSettings) -> GsaSettings:
    settings = GsaSettings(
        fls_threshold=table.number("fls_threshold", 0.60, lo=0.0, lo_open=True, hi=1.0),
        ptv_margin_mm=table.number("ptv_margin_mm", 5.0, lo=0.0, hi=50.0),
        liver_roi_names=common.liver_roi_names,
    )
    table.finish()
    return settings
