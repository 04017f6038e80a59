"""The workflow interface: what one analysis package tells the node, and what the node hands it.

A workflow is one package (``node/perfusion``, ``node/gsa``, ``node/maa``). Its ``workflow.py`` defines one
object, an instance of a :class:`Workflow` subclass, and ``node/registry.py`` lists that object once. Nothing
else in the node names a workflow: classification, completion, analysis, the case record, the report, status
and the demo iterate the registry and ask each workflow:

========================  ==================================================================================
``name``                  its key: ``[analysis.NAME]`` settings table, case record, report groups, status
``needs`` / ``uses``      series roles it needs (key input first) / uses when present
``depends_on``            workflows whose results it takes (run first; handed over in ``RunContext.upstream``)
``role_rules``            how a series gets a role only this workflow knows (e.g. NM + 99mTc-GSA = spect-gsa)
``tracers``               the radiopharmaceuticals it analyses (names for ``[classify.tracers]``)
``output_kinds``          routing keys beyond :data:`CORE_OUTPUT_KINDS` that its outputs use (e.g. "rtdose")
``parse_settings``        its ``[analysis.NAME]`` table -> its frozen settings dataclass (errors name the key)
``select_inputs``         which series of the case it uses, and why (the seam a series selector replaces)
``run``                   selected inputs (+ upstream results) -> :class:`WorkflowResult` (typed measurements)
``report_groups``         its measurements as report groups (SR TID 1500 and summary page)
``summary_section``       its section of the summary page
``phantom_checks``        its measurements against the digital phantom's truth (``demo``)
========================  ==================================================================================

The node's side of the contract: inputs are read on demand (pixel data included) through the
:class:`RunContext` and released when the workflow's ``run`` returns; the report gets headers only. Results are
typed: ``WorkflowResult.measurements`` is a dataclass (serialised to the case record by ``node.record``), so a
report that reads a renamed field fails type checking and its tests instead of silently printing less.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydicom import Dataset

from node.configtable import ConfigTable
from node.errors import AnalysisError
from node.index import SeriesRow
from node.report.groups import Coded, Group
from node.report.summary import Column, SummaryBlock, Table, number

__all__ = [
    "CORE_OUTPUT_KINDS", "OutputObject", "WorkflowResult", "RoleRule", "RoleContext", "CaseSeries", "ChosenSeries",
    "InputSelection", "SeriesReader", "RunContext", "CommonSettings", "TruthCheck", "Workflow", "AnalysisError",
]

#: Routing keys every node knows; a destination lists the kinds it takes. A workflow that produces another kind
#: declares it in ``Workflow.output_kinds`` (the registry adds it to the keys destinations may list).
CORE_OUTPUT_KINDS: tuple[str, ...] = ("parametric-map", "secondary-capture", "report", "rtstruct")
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")

S = TypeVar("S")  # a workflow's settings dataclass
M = TypeVar("M")  # a workflow's measurements dataclass


@dataclass(frozen=True)
class OutputObject:
    """One DICOM object produced for delivery; `kind` is its routing key (see CORE_OUTPUT_KINDS)."""

    kind: str
    dataset: Dataset
    description: str = ""

    def __post_init__(self) -> None:
        if not _KIND_RE.match(self.kind):
            raise ValueError(f"output kind {self.kind!r} is not a routing key (lower-case letters, digits, '-')")


@dataclass
class WorkflowResult(Generic[M]):
    """What a workflow hands back: objects to deliver, typed measurements, warnings for people.

    `measurements` is a dataclass: the case record stores it (with a schema version) and the report reads its
    fields. A workflow may subclass this to hand over more to workflows that depend on it (e.g. the perfusion
    result carries its unenhanced CT for registering the MAA SPECT to its maps); such extra fields are not
    recorded.
    """

    workflow: str
    measurements: M
    outputs: list[OutputObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CommonSettings:
    """Analysis settings every workflow shares (the ``[analysis]`` table itself)."""

    liver_roi_names: tuple[str, ...] = ("Liver", "LIVER", "liver", "Leber", "Whole Liver", "Foie", "Higado")

    def is_liver_name(self, name: str) -> bool:
        return name.strip().lower() in {n.strip().lower() for n in self.liver_roi_names}


# ----------------------------------------------------------------------------------------------- series roles
@dataclass(frozen=True)
class RoleContext:
    """What a role rule may look at besides the series itself: the other series of the case, the settings."""

    series: tuple[SeriesRow, ...]
    common: CommonSettings

    @property
    def nuclear_frames_of_reference(self) -> frozenset[str]:
        """Frames of reference of the case's NM/PT series (a CT sharing one is the CT of a SPECT/CT or PET/CT)."""
        return frozenset(s.frame_of_reference_uid for s in self.series
                         if s.modality in ("NM", "PT") and s.frame_of_reference_uid)


@dataclass(frozen=True)
class RoleRule:
    """A series whose header `matches` gets `role`. Rules are tried by ascending `priority` (workflow rules
    before the node's generic ones, see node.classify), then in registry order; the first match wins."""

    role: str
    description: str  # for people and the README: "NM whose radiopharmaceutical is 99mTc-GSA"
    matches: Callable[[SeriesRow, RoleContext], bool]
    priority: int = 10
    #: why a given series matched, in words with its own values (status, dashboard); `description` when None
    explain: Callable[[SeriesRow, RoleContext], str] | None = None
    #: why a series of the kind this rule looks at does NOT get the role (e.g. a CT localizer for a CT role), in
    #: words; None when the series is not of its kind at all. `status` shows it for series no rule claims.
    why_not: Callable[[SeriesRow, RoleContext], str | None] | None = None

    def why(self, series: SeriesRow, ctx: RoleContext) -> str:
        return self.explain(series, ctx) if self.explain is not None else self.description

    def rejection(self, series: SeriesRow, ctx: RoleContext) -> str | None:
        """Why `series` does not get this role, when it is of the kind the rule looks at (else None)."""
        return self.why_not(series, ctx) if self.why_not is not None else None


@dataclass(frozen=True)
class CaseSeries:
    """The series of one case with the role each was given (from the index: headers only, nothing read)."""

    case_id: str
    series: tuple[SeriesRow, ...]
    roles: Mapping[str, str]  # series_uid -> role

    def with_role(self, role: str) -> list[SeriesRow]:
        """Series of a role, newest first."""
        return sorted((s for s in self.series if self.roles.get(s.series_uid) == role),
                      key=lambda s: s.last_received, reverse=True)


# -------------------------------------------------------------------------------------------- input selection
@dataclass(frozen=True)
class ChosenSeries:
    """One input of a workflow: the series it uses under its own name for it, and why that one."""

    input: str  # the workflow's name for the input, e.g. "GSA SPECT"
    series: SeriesRow
    why: str  # e.g. "newest of 2 spect-gsa series"

    def describe(self) -> dict[str, str]:
        return {"input": self.input, "series_uid": self.series.series_uid, "modality": self.series.modality,
                "description": self.series.series_description, "why": self.why}


@dataclass(frozen=True)
class InputSelection:
    """The series a workflow will read, each named and explained (recorded in the case record)."""

    chosen: tuple[ChosenSeries, ...] = ()

    def series(self, input_name: str) -> SeriesRow | None:
        return next((c.series for c in self.chosen if c.input == input_name), None)

    def describe(self) -> list[dict[str, str]]:
        return [c.describe() for c in self.chosen]


def newest(case: CaseSeries, role: str, input_name: str,
           accept: Callable[[SeriesRow], bool] | None = None, condition: str = "") -> ChosenSeries | None:
    """The newest series of `role` (that `accept` takes), with the reason, or None. The common choice rule."""
    candidates = [s for s in case.with_role(role) if accept is None or accept(s)]
    if not candidates:
        return None
    why = f"newest of {len(candidates)} {role} series" if len(candidates) > 1 else f"the {role} series"
    return ChosenSeries(input_name, candidates[0], why + (f" {condition}" if condition else ""))


# ------------------------------------------------------------------------------------------------ running
class SeriesReader(Protocol):
    """Reads the instances of a series (pixel data included); the node releases them when the workflow ends."""

    def read(self, series: SeriesRow) -> list[Dataset]: ...


@dataclass
class RunContext:
    """Everything a workflow's run gets besides its settings."""

    case: CaseSeries
    selection: InputSelection
    reader: SeriesReader
    common: CommonSettings
    #: results of this case's workflows that ran before, by name (only those listed in `depends_on`)
    upstream: Mapping[str, WorkflowResult[Any]] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return self.case.case_id

    def read(self, input_name: str) -> list[Dataset]:
        """All instances of the selected input (raises AnalysisError when it was not selected)."""
        series = self.selection.series(input_name)
        if series is None:
            raise AnalysisError(f"no {input_name} in case {self.case_id}")
        return self.reader.read(series)

    def read_optional(self, input_name: str) -> list[Dataset] | None:
        """The instances of an optional input, or None when the case has none."""
        series = self.selection.series(input_name)
        return None if series is None else self.reader.read(series)

    def result_of(self, workflow: Workflow[Any, M]) -> WorkflowResult[M] | None:
        """The result `workflow` produced earlier in this run of the case (a declared dependency), else None."""
        return self.upstream.get(workflow.name)


@dataclass(frozen=True)
class TruthCheck:
    """One measured quantity against the phantom's truth (the demo's commissioning table)."""

    quantity: str
    measured: float | None
    truth: float
    tolerance: str
    ok: bool


class Workflow(ABC, Generic[S, M]):
    """One analysis. Subclass it in the package's ``workflow.py``, make one instance, list it in the registry.

    Class attributes describe it; the methods are called by the node in this order: ``parse_settings`` (at
    start-up), then per case ``select_inputs``, ``run``, ``report_groups`` (+ ``summary_section``).
    """

    name: ClassVar[str]
    title: ClassVar[str]  # for people: "Liver CT perfusion"
    procedure: ClassVar[Coded]  # the SR's "procedure reported"
    needs: ClassVar[tuple[str, ...]]  # roles, key input first
    uses: ClassVar[tuple[str, ...]] = ()  # roles used when present
    depends_on: ClassVar[tuple[str, ...]] = ()  # workflows whose results it takes (run before it)
    role_rules: ClassVar[tuple[RoleRule, ...]] = ()
    #: radiopharmaceuticals it analyses, as its role rules recognise them ("Tc-99m MAA"): the names a site may use
    #: in ``[classify.tracers]`` and the ones `status` suggests for an NM SPECT of unknown tracer
    tracers: ClassVar[tuple[str, ...]] = ()
    output_kinds: ClassVar[tuple[str, ...]] = ()  # routing keys beyond CORE_OUTPUT_KINDS
    settings_type: ClassVar[type]
    measurements_type: ClassVar[type]
    #: flat ``[analysis]`` keys of the old configuration layout that this workflow's table took over: old -> new
    legacy_keys: ClassVar[Mapping[str, str]] = {}
    #: position of its groups in the report (lower first); its key input's study is the report's study
    report_rank: ClassVar[int] = 100
    #: its groups form a report of their own (SR + summary page) in the study of its key input instead of joining
    #: the case report: findings of a later visit (post-therapy imaging, a plan the TPS sent back)
    separate_report: ClassVar[bool] = False

    @abstractmethod
    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> S:
        """Validate the ``[analysis.NAME]`` table (call ``table.finish()``) into the frozen settings dataclass."""

    @abstractmethod
    def select_inputs(self, case: CaseSeries, settings: S) -> InputSelection:
        """The series to use (raise AnalysisError, with the reason, when the case cannot be analysed)."""

    @abstractmethod
    def run(self, ctx: RunContext, settings: S) -> WorkflowResult[M]:
        """Analyse; raise an AnalysisError subclass with the reason when the inputs cannot be used."""

    def report_groups(self, result: WorkflowResult[M], sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        """Its measurements as report groups; `sources` are the case's input headers by role."""
        return []

    def summary_section(self, groups: Sequence[Group]) -> Sequence[SummaryBlock]:
        """Its part of the summary page under its title: tables (node.report.summary.Table), notes, or plain
        strings (one paragraph each). Default: one table of every item."""
        rows = tuple((g.identifier, i.label, number(i.value, i.unit, i.decimals), i.unit)
                     for g in groups for i in g.items)
        return [Table((Column("region", align="l", width=2.0), Column("measurement", align="l", width=2.0),
                       Column("value"), Column("unit", align="l")), rows)]

    def phantom_checks(self, measurements: M, truth: Mapping[str, Any]) -> list[TruthCheck]:
        """Its figures against the digital phantom's truth (node/phantom); none by default."""
        return []
