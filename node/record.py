"""The case record: what an analysis of a case found, as JSON in the index (``cases.result``), versioned.

Each workflow's measurements are a dataclass; ``encode`` turns one into JSON-ready data and ``decode`` turns
that back into the dataclass (cattrs: structure by the type hints; a key the class does not have, or a missing
required one, raises instead of being dropped). Records of another ``schema`` are not decoded: the
record says which version wrote it.

Record layout (schema 2)::

    {"schema": 2,
     "workflows": ["perfusion", "maa"],            # runnable when the analysis started, in run order
     "waiting": {"gsa": ["planning-ct"]},          # workflows whose key input is there, missing roles
     "inputs": {"maa": [{"input": "MAA SPECT", "series_uid": ..., "why": ...}, ...]},
     "results": {"maa": {"measurements": {...}, "warnings": [...], "seconds": 12.3, "outputs": 3}},
     "errors": {"gsa": "..."},
     "outputs": 9}
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cattrs
import numpy as np

__all__ = ["CASE_RECORD_SCHEMA", "CaseRecord", "WorkflowRecord", "RecordError", "encode", "decode", "dumps"]

CASE_RECORD_SCHEMA = 2

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


class RecordError(ValueError):
    """A case record (or part of one) does not match the dataclass it should hold."""


def encode(obj: Any) -> Any:
    """A dataclass (or plain value) as JSON-ready data: dicts, lists, str, numbers, bools, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(_converter.unstructure(obj))
    return _plain(obj)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; a value that cannot be trusted is recorded as not measured
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise TypeError(f"cannot record a {type(v).__name__} in the case record")


def decode(data: Any, cls: type[T]) -> T:
    """`data` (as ``encode`` made it, after a JSON round trip) back into `cls`; RecordError if it does not fit."""
    try:
        return _converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else exc
        raise RecordError(f"not a {cls.__name__}: {detail}") from None


def dumps(record: Any) -> str:
    """JSON text of an encoded record (strict: anything not JSON-ready is an error, never a silent str())."""
    return json.dumps(record, allow_nan=False)


@dataclass
class WorkflowRecord:
    """One workflow's part of the record."""

    measurements: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outputs: int = 0


@dataclass
class CaseRecord:
    """The record of one analysis of a case (see the module docstring)."""

    schema: int = CASE_RECORD_SCHEMA
    workflows: list[str] = field(default_factory=list)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    inputs: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    results: dict[str, WorkflowRecord] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    outputs: int = 0

    def to_json(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_json(cls, data: Any) -> CaseRecord:
        """The record, or RecordError when it was written by another schema version (or is not a record)."""
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != CASE_RECORD_SCHEMA:
            raise RecordError(f"case record schema {schema!r}, this version reads {CASE_RECORD_SCHEMA}: "
                              "reprocess the case to record it again")
        return decode(data, cls)

    def measurements(self, name: str, cls: type[T]) -> T | None:
        """The typed measurements of workflow `name`, or None when it produced none in this analysis."""
        entry = self.results.get(name)
        return None if entry is None else decode(entry.measurements, cls)
