"""The one base class of analysis refusals; each package's own errors (``node/<package>/errors.py``) derive from it."""
from __future__ import annotations

__all__ = ["AnalysisError"]


class AnalysisError(Exception):
    """An analysis refused its input for a stated clinical/technical reason (the workflow is marked failed).

    The message is shown to the operator in `status`, so it must say what was wrong and what to do.
    """
