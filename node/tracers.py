"""Which tracer an NM series shows: header code, then header text, then the site's rules (``[classify.tracers]``).

Real scanners often leave RadiopharmaceuticalInformationSequence empty or write only the nuclide ("Tc99m"); the
tracer is then only in words people typed: SeriesDescription, ProtocolName, StudyDescription. A site writes one
rule per tracer it uses, the radiopharmaceutical as the workflows know it and the patterns that name it::

    [classify.tracers]
    "Tc-99m MAA" = ['\\bMAA\\b', 'lung shunt']
    "Tc-99m GSA" = ['\\bGSA\\b', 'asialo']

Patterns are regular expressions, case-insensitive, searched in ``[classify] tracer_fields`` (default: all three).
A rule applies only where the header's own code and text name no tracer a workflow knows; when patterns of two
tracers match, nothing is guessed (the series is reported as of unknown tracer, with both rules named).
node.classify applies them; node.config validates them (every tracer must be one a registered workflow takes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

__all__ = ["TRACER_FIELDS", "TracerRule", "TracerRules", "TracerMatch"]

#: Header attributes the rules may look at, and the SeriesRow field holding each.
TRACER_FIELDS = {"SeriesDescription": "series_description", "ProtocolName": "protocol_name",
                 "StudyDescription": "study_description"}


class _Described(Protocol):
    @property
    def series_description(self) -> str: ...
    @property
    def protocol_name(self) -> str: ...
    @property
    def study_description(self) -> str: ...


@dataclass(frozen=True)
class TracerRule:
    """Patterns that name one radiopharmaceutical."""

    radiopharmaceutical: str  # as the workflows' role rules recognise it, e.g. "Tc-99m MAA"
    patterns: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class TracerMatch:
    """What the rules found for one series: the tracer (or several, when ambiguous) and where."""

    radiopharmaceuticals: tuple[str, ...]
    evidence: str  # e.g. "SeriesDescription 'SPECT MAA Leber' matches '\\bMAA\\b'"

    @property
    def ambiguous(self) -> bool:
        return len(self.radiopharmaceuticals) > 1


@dataclass(frozen=True)
class TracerRules:
    rules: tuple[TracerRule, ...] = ()
    fields: tuple[str, ...] = tuple(TRACER_FIELDS)

    def match(self, series: _Described) -> TracerMatch | None:
        """The tracer(s) whose patterns match the series' descriptions (None: no rule matches)."""
        found: dict[str, str] = {}
        for rule in self.rules:
            for field_name in self.fields:
                text = str(getattr(series, TRACER_FIELDS[field_name], "") or "")
                hit = next((p for p in rule.patterns if text and p.search(text)), None)
                if hit is not None:
                    found.setdefault(rule.radiopharmaceutical, f"{field_name} {text!r} matches {hit.pattern!r}")
                    break
        if not found:
            return None
        return TracerMatch(tuple(found), "; ".join(found.values()))

    def describe_fields(self, series: _Described) -> str:
        """The looked-at descriptions of a series, for the operator: what a rule could match."""
        parts = [f"{f} {str(getattr(series, TRACER_FIELDS[f], '') or '')!r}" for f in self.fields]
        return ", ".join(parts)
