"""DICOM dates and times (DA, TM, DT) -> datetime, the one parser of the node (pydicom.valuerep underneath).

Used by the receive path (the index's acquisition time of each instance) and the perfusion 4D assembly (frame
times), so both order images the same way. Conventions, applied everywhere:

* ACR-NEMA style times with colons ("10:31:05") are read as "103105": scanners still write them.
* A UTC offset in a DT is dropped (all images of a series share it; only differences and order matter), unless
  the caller asks to keep it (``keep_offset=True``: decay between an administration and an image, which may have
  been recorded with different offsets).
* An image's acquisition time is, in order: the frame's FrameAcquisitionDateTime / FrameReferenceDateTime
  (Enhanced images), AcquisitionDateTime, then AcquisitionTime or ContentTime with the first date found among
  AcquisitionDate / ContentDate / SeriesDate / StudyDate. Without any date the time is placed on
  :data:`UNDATED` (it only matters across midnight, and all images of a series then fall back alike).
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

from pydicom.valuerep import DA, DT, TM

__all__ = ["UNDATED", "parse_da", "parse_tm", "parse_dt", "parse_da_tm", "acquisition_datetime", "acquisition_seconds"]

#: The day an undated time is placed on.
UNDATED = _dt.date(2000, 1, 1)
_EPOCH = _dt.datetime(1970, 1, 1)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_da(value: Any) -> _dt.date | None:
    """A DA value ("20240131", also ACR-NEMA "2024.01.31") as a date, None when empty or invalid."""
    try:
        parsed = DA(_text(value))
    except (ValueError, TypeError):
        return None
    return None if parsed is None else _dt.date(parsed.year, parsed.month, parsed.day)


def parse_tm(value: Any) -> _dt.time | None:
    """A TM value ("103105.5", "1031", ACR-NEMA "10:31:05") as a time, None when empty or invalid."""
    try:
        parsed = TM(_text(value).replace(":", ""))
    except (ValueError, TypeError):
        return None
    return None if parsed is None else _dt.time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond)


def parse_dt(value: Any, keep_offset: bool = False) -> _dt.datetime | None:
    """A DT value ("20240131103105.5+0100") as a datetime, None when empty or invalid.

    Naive (offset dropped) unless `keep_offset`: then a value with an offset is time-zone aware.
    """
    try:
        parsed = DT(_text(value).replace(":", ""))
    except (ValueError, TypeError):
        return None
    if parsed is None:
        return None
    return _dt.datetime(parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second,
                        parsed.microsecond, tzinfo=parsed.tzinfo if keep_offset else None)


def parse_da_tm(date: Any, time: Any) -> _dt.datetime | None:
    """A DA and a TM (e.g. SeriesDate + SeriesTime) as one naive datetime, None when either is empty or invalid."""
    day, clock = parse_da(date), parse_tm(time)
    return None if day is None or clock is None else _dt.datetime.combine(day, clock)


def acquisition_datetime(ds: Any, frame_content: Any = None) -> _dt.datetime | None:
    """When an image (or one frame, given its FrameContentSequence item) was acquired; None if not recorded.

    `ds` may be a pydicom Dataset or anything with ``get(keyword)`` (the receive path's fast header).
    """
    if frame_content is not None:
        for kw in ("FrameAcquisitionDateTime", "FrameReferenceDateTime"):
            parsed = parse_dt(frame_content.get(kw))
            if parsed is not None:
                return parsed
    parsed = parse_dt(ds.get("AcquisitionDateTime"))
    if parsed is not None:
        return parsed
    for time_kw, date_kw in (("AcquisitionTime", "AcquisitionDate"), ("ContentTime", "ContentDate")):
        tm = parse_tm(ds.get(time_kw))
        if tm is None:
            continue
        for kw in (date_kw, "ContentDate", "SeriesDate", "StudyDate"):
            date = parse_da(ds.get(kw))
            if date is not None:
                return _dt.datetime.combine(date, tm)
        return _dt.datetime.combine(UNDATED, tm)
    return None


def acquisition_seconds(ds: Any) -> float | None:
    """:func:`acquisition_datetime` as seconds since 1970-01-01 (naive: no time zone), for the index."""
    when = acquisition_datetime(ds)
    return None if when is None else (when - _EPOCH).total_seconds()
