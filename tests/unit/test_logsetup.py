"""node.logsetup: the node's INFO lines show, the libraries' INFO lines do not (their warnings do)."""
from __future__ import annotations

import logging

import pytest

from node.logsetup import THIRD_PARTY, configure


@pytest.fixture(autouse=True)
def restore_logging():
    levels = {name: logging.getLogger(name).level for name in ("", *THIRD_PARTY)}
    handlers = list(logging.getLogger().handlers)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = handlers


def test_third_party_info_stays_below_the_node_level(capsys):
    configure("INFO")
    logging.getLogger("node.gsa").info("node line")
    logging.getLogger("highdicom.sr").info("library chatter")
    logging.getLogger("highdicom.sr").warning("library warning")
    logging.getLogger("pynetdicom.assoc").info("PDU narration")
    err = capsys.readouterr().err
    assert "node line" in err and "library warning" in err
    assert "library chatter" not in err and "PDU narration" not in err
    assert {"highdicom", "pynetdicom", "matplotlib"} <= set(THIRD_PARTY)


def test_debug_shows_everything(capsys):
    configure("DEBUG")
    logging.getLogger("highdicom.sr").info("library chatter")
    assert "library chatter" in capsys.readouterr().err
