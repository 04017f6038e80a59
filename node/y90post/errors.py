"""Refusals of the post-therapy dosimetry workflow (shown to the operator)."""
from __future__ import annotations

from node.errors import AnalysisError

__all__ = ["PostTherapyInputError"]


class PostTherapyInputError(AnalysisError):
    """The post-therapy inputs cannot give a delivered dose to compare (the message says which and why)."""
