"""Settings of the GSA plan evaluation: the ``[analysis.gsaplan]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigTable
from node.workflow import CommonSettings

__all__ = ["GsaPlanSettings", "parse_settings"]


@dataclass(frozen=True)
class GsaPlanSettings:
    threshold_gy: float = 20.0  # FLV<x>Gy and F<x>Gy: the dose the functional liver should not receive
    flv_warning_percent: float = 20.0  # warn when more than this % of the functional liver receives it


def parse_settings(table: ConfigTable, common: CommonSettings) -> GsaPlanSettings:
    settings = GsaPlanSettings(
        threshold_gy=table.number("threshold_gy", 20.0, lo=0.0, lo_open=True, hi=200.0),
        flv_warning_percent=table.number("flv_warning_percent", 20.0, lo=0.0, hi=100.0),
    )
    table.finish()
    return settings
