"""What an analysis hands back to the node: DICOM objects to deliver and measurements for the case record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset

from node.config import OUTPUT_KINDS


class AnalysisError(Exception):
    """An analysis refused its input for a stated clinical/technical reason (the case is marked failed).

    The message is shown to the operator in `status`, so it must say what was wrong and what to do.
    """


@dataclass(frozen=True)
class OutputObject:
    """One DICOM object produced for delivery; `kind` is a routing key from OUTPUT_KINDS."""

    kind: str
    dataset: Dataset
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; expected one of {OUTPUT_KINDS}")


@dataclass
class AnalysisResult:
    """Outputs plus JSON-serialisable measurements (units in the keys or values) for the case record/report."""

    name: str
    outputs: list[OutputObject] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
