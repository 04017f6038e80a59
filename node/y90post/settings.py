"""Settings of the post-therapy dosimetry workflow: the ``[analysis.y90post]`` table."""
from __future__ import annotations

from dataclasses import dataclass

from node.configtable import ConfigTable
from node.workflow import CommonSettings

__all__ = ["Y90PostSettings", "parse_settings"]


@dataclass(frozen=True)
class Y90PostSettings:
    #: a region whose delivered / predicted mean dose departs from 1 by more than this is flagged (a mismatch
    #: between the MAA and the microspheres, or a misregistration: a warning to review, not a verdict)
    mismatch_warning: float = 0.20
    #: the administered activity, for a bremsstrahlung SPECT whose header does not state it (RadionuclideTotalDose);
    #: None: the header's, else the planned activity of the MAA plan (said in the report)
    administered_activity_gbq: float | None = None
    #: a region is compared only when at least this share of it lies inside the post-therapy field of view
    min_coverage: float = 0.99


def parse_settings(table: ConfigTable, common: CommonSettings) -> Y90PostSettings:
    settings = Y90PostSettings(
        mismatch_warning=table.number("mismatch_warning", 0.20, lo=0.0, lo_open=True, hi=10.0),
        administered_activity_gbq=table.optional_number("administered_activity_gbq", lo=0.01, hi=20.0),
        min_coverage=table.number("min_coverage", 0.99, lo=0.5, hi=1.0),
    )
    table.finish()
    return settings
