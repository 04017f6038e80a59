"""Logging, configured once at the entry point: stderr, one line per event.

The node's own loggers (``node.*``, ``rtstruct.*``) log at the configured level; libraries are one step
quieter: their INFO lines (pynetdicom narrates every PDU, highdicom every encoded object: ~90 lines per case)
are kept below the node's level, their warnings and errors are not. At DEBUG everything shows.
"""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Third-party loggers whose INFO lines would drown the node's own (WARNING and above still show).
THIRD_PARTY = ("pynetdicom", "apscheduler", "highdicom", "pydicom", "matplotlib", "PIL", "numba", "urllib3",
               "selenium", "SimpleITK")


def configure(level: str = "INFO") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level))
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)  # Python warnings (pydicom's value checks) as one log line, not two stderr lines
