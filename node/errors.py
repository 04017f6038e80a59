"""The one base class of analysis refusals; each package's own errors (``node/<package>/errors.py``) derive from it."""
from __future__ import annotations

import re

__all__ = ["AnalysisError", "itk_reason"]


class AnalysisError(Exception):
    """An analysis refused its input for a stated clinical/technical reason (the workflow is marked failed).

    The message is shown to the operator in `status`, so it must say what was wrong and what to do.
    """


_SITK_FILTER = re.compile(r"Exception thrown in SimpleITK (\w+)")
_ITK_ERROR = re.compile(r"ITK ERROR: [^\n]*?\(0x[0-9a-fA-F]+\): ([^\n]+)")


def itk_reason(exc: BaseException) -> str:
    """An exception's text for an operator: SimpleITK's without the source path and object address ("SimpleITK
    BinShrink: InputImage is too small! ..."), any other's first line."""
    text = str(exc)
    where, what = _SITK_FILTER.search(text), _ITK_ERROR.search(text)
    if where is None and what is None:
        return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    reason = what.group(1).strip() if what is not None else text.strip().splitlines()[-1]
    return f"SimpleITK {where.group(1)}: {reason}" if where is not None else f"SimpleITK: {reason}"
