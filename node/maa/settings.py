"""Settings of the MAA workflow: the ``[analysis.maa]`` table (and its ``dose_limits`` and ``ct_density``
sub-tables).

Planning (partition model) and the predicted Y-90 dose share the table: the dose is the dose of the planned
activity, and its safety flags depend on the sphere type and the treatment (bilobar, compromised liver, lung
dose of earlier sessions), which are the physicist's settings for this site's protocol.

The partition model plans to :attr:`MaaSettings.partition_targets`: by default the very safety limits the
predicted dose is checked against (sphere type and treatment), so the node's own plan is not flagged by its own
check; a site that plans to other doses sets ``normal_liver_dose_gy`` / ``lung_dose_limit_gy`` and says so in
every output (the targets' basis).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from node.configtable import ConfigError, ConfigTable
from node.dose.density import DEFAULT_CALIBRATION, DensityCalibration
from node.dose.safety import DoseLimits, SphereType, TreatmentContext
from node.workflow import CommonSettings

__all__ = ["MaaSettings", "PartitionTargets", "parse_settings", "LIMIT_KEYS"]

#: Keys of ``[analysis.maa.dose_limits]``: each replaces the EANM default of the sphere type (Gy, mean doses).
LIMIT_KEYS = ("normal_liver_max_gy", "normal_liver_compromised_max_gy", "tumour_min_gy", "tumour_goal_gy",
              "lung_session_max_gy", "lung_cumulative_max_gy")


@dataclass(frozen=True)
class PartitionTargets:
    """The doses the partition model plans to, and where each comes from (the site's setting or a safety limit)."""

    normal_liver_gy: float
    lung_gy: float  # <= 0 when earlier sessions used up the cumulative lung limit: no plan
    normal_liver_from: str
    lung_from: str

    @property
    def basis(self) -> str:
        """One line for the outputs, e.g. "normal liver 40 Gy (resin safety limit, unilobar), lungs 30 Gy (safety
        limit per session)"; "site setting" is [analysis.maa] normal_liver_dose_gy / lung_dose_limit_gy."""
        return (f"normal liver {self.normal_liver_gy:g} Gy ({self.normal_liver_from}), lungs {self.lung_gy:g} Gy "
                f"({self.lung_from})")


@dataclass(frozen=True)
class MaaSettings:
    #: partition model: normal-liver and lung doses to plan to; None = the safety limits (partition_targets)
    normal_liver_dose_gy: float | None = None
    lung_dose_limit_gy: float | None = None
    lung_shunt_fraction: float | None = None  # from planar imaging, used when the MAA SPECT misses the lungs
    liver_roi_names: tuple[str, ...] = CommonSettings.liver_roi_names  # from [analysis] liver_roi_names
    # ---- predicted Y-90 dose (local deposition) of the planned activity
    predicted_dose: bool = True  # compute it (needs the SPECT/CT's CT for the tissue mass)
    prescribed_activity_gbq: float | None = None  # the dose of this activity instead of the partition model's
    sphere_type: SphereType = SphereType.RESIN
    bilobar: bool = False
    compromised_liver: bool = False
    prior_lung_dose_gy: float = 0.0  # lung dose of earlier radioembolization sessions (cumulative limit)
    dose_limits: DoseLimits = DoseLimits.eanm(SphereType.RESIN)
    ct_density: DensityCalibration = DEFAULT_CALIBRATION

    @property
    def treatment(self) -> TreatmentContext:
        return TreatmentContext(bilobar=self.bilobar, compromised_liver=self.compromised_liver,
                                prior_lung_dose_gy=self.prior_lung_dose_gy)

    @property
    def partition_targets(self) -> PartitionTargets:
        """The site's planning doses where set, else the safety limits of the sphere type and treatment."""
        context, limits = self.treatment, self.dose_limits
        kind = limits.sphere_type.value
        if self.normal_liver_dose_gy is not None:
            nl, nl_from = self.normal_liver_dose_gy, "site setting"
        else:
            compromised = context.bilobar or context.compromised_liver
            nl = limits.normal_liver_limit(context)
            nl_from = f"{kind} safety limit, {'bilobar or compromised' if compromised else 'unilobar'}"
        if self.lung_dose_limit_gy is not None:
            lung, lung_from = self.lung_dose_limit_gy, "site setting"
        else:
            lung = limits.lung_limit(context)
            lung_from = ("safety limit per session" if lung == limits.lung_session_max_gy else
                         f"safety limit {limits.lung_cumulative_max_gy:g} Gy cumulative - "
                         f"{context.prior_lung_dose_gy:g} Gy before")
        return PartitionTargets(nl, lung, nl_from, lung_from)


def _limits(table: ConfigTable, sphere: SphereType) -> DoseLimits:
    """EANM defaults of the sphere type, any of them replaced by ``[analysis.maa.dose_limits]``."""
    changes: dict[str, float | None] = {}
    for key in LIMIT_KEYS:
        value = table.optional_number(key, lo=0.0, hi=1000.0)
        if value is not None:
            if value <= 0:
                raise ConfigError(table.key(key), "must be a positive number of Gy")
            changes[key] = value
    table.finish()
    defaults = DoseLimits.eanm(sphere)
    if not changes:
        return defaults
    names = ", ".join(f"{k} = {v:g}" for k, v in changes.items() if v is not None)
    try:
        return replace(defaults, **changes, source=f"{defaults.source}; site changes: {names}")  # type: ignore[arg-type]
    except ValueError as exc:  # inconsistent limits: name the table
        raise ConfigError(table.prefix, str(exc).removeprefix("dose limits: ")) from None


def _calibration(table: ConfigTable) -> DensityCalibration:
    if not table.table:
        table.finish()
        return DEFAULT_CALIBRATION
    hu, rho = table.get("hu"), table.get("density_g_per_ml")
    name = table.required_string("name", "site calibration")
    table.finish()
    for key, values in (("hu", hu), ("density_g_per_ml", rho)):
        if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                    for v in values):
            raise ConfigError(table.key(key), f"must be a list of numbers, got {values!r}")
    try:
        return DensityCalibration(tuple(hu), tuple(rho), name)
    except ValueError as exc:
        raise ConfigError(table.prefix, str(exc).removeprefix("density calibration: ")) from None


def parse_settings(table: ConfigTable, common: CommonSettings) -> MaaSettings:
    sphere = SphereType(table.choice("sphere_type", SphereType.RESIN.value, tuple(s.value for s in SphereType)))
    settings = MaaSettings(
        normal_liver_dose_gy=table.optional_number("normal_liver_dose_gy", lo=0.0, lo_open=True, hi=200.0),
        lung_dose_limit_gy=table.optional_number("lung_dose_limit_gy", lo=0.0, lo_open=True, hi=200.0),
        lung_shunt_fraction=table.optional_number("lung_shunt_fraction", lo=0.0, hi=0.99),
        liver_roi_names=common.liver_roi_names,
        predicted_dose=table.boolean("predicted_dose", True),
        prescribed_activity_gbq=table.optional_number("prescribed_activity_gbq", lo=0.01, hi=20.0),
        sphere_type=sphere,
        bilobar=table.boolean("bilobar", False),
        compromised_liver=table.boolean("compromised_liver", False),
        prior_lung_dose_gy=table.number("prior_lung_dose_gy", 0.0, lo=0.0, hi=200.0),
        dose_limits=_limits(table.sub("dose_limits"), sphere),
        ct_density=_calibration(table.sub("ct_density")),
    )
    table.finish()
    return settings
