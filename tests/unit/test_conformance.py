"""The DICOM Conformance Statement: the committed docs/conformance.md is what the code generates, and a running
node negotiates exactly the SOP class / transfer syntax pairs its SCP tables list (every pair proposed one by one,
plus classes and syntaxes the statement does not list)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pynetdicom import AE, build_context

from node.conformance import statement

from conftest import RecordingSink

pytestmark = pytest.mark.network
DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
NOT_LISTED_CLASSES = ("1.2.840.10008.5.1.4.31",  # Modality Worklist FIND: not a service of this node
                      "1.3.6.1.4.1.5962.301.1",  # a private SOP class
                      "1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Query/Retrieve FIND
NOT_LISTED_SYNTAXES = ("1.2.840.10008.1.2.4.201",  # HTJ2K lossless (if the node ever accepts it, the table says so)
                       "1.2.840.10008.1.2.4.110",  # JPEG XL lossless
                       "1.2.3.4.5")  # nonsense


def _tables(text: str) -> dict[str, set[str]]:
    """SOP Class UID -> transfer syntax UIDs, read from the statement's SCP tables (2.2.1 and 2.2.3)."""
    section = text.split("#### 2.2.1 SOP classes", 1)[1].split("#### 2.2.2", 1)[0]
    classes = dict(re.findall(r"^\| [^|]+ \| ([0-9.]+) \| (TS-\d+) \|$", section, re.M))
    syntaxes: dict[str, set[str]] = {}
    ts_part = text.split("#### 2.2.3", 1)[1].split("#### 2.2.4", 1)[0]
    for label, body in re.findall(r"^(TS-\d+):\n\n(.*?)(?=\n\n)", ts_part, re.M | re.S):
        syntaxes[label] = set(re.findall(r"^\| [^|]+ \| ([0-9.]+) \|$", body, re.M))
    return {uid: syntaxes[label] for uid, label in classes.items()}


def test_the_committed_statement_is_what_the_code_generates() -> None:
    assert DOC.read_text() == statement(), ("docs/conformance.md is stale: run "
                                            "`liver-node conformance --output docs/conformance.md`")
    tables = _tables(DOC.read_text())
    assert len(tables) > 100 and "1.2.840.10008.1.1" in tables
    assert "1.2.840.10008.1.2.4.90" in tables["1.2.840.10008.5.1.4.1.1.2"]  # CT in JPEG 2000 lossless


def test_the_node_negotiates_exactly_what_the_statement_says(node_factory) -> None:
    tables = _tables(statement())
    all_syntaxes = sorted(set().union(*tables.values()) | set(NOT_LISTED_SYNTAXES))
    node = node_factory(sink=RecordingSink())
    pairs = [(sop, ts) for sop in [*tables, *NOT_LISTED_CLASSES] for ts in all_syntaxes]
    accepted: set[tuple[str, str]] = set()
    for start in range(0, len(pairs), 127):  # one context per pair; at most 128 contexts per association
        chunk = pairs[start:start + 127]
        ae = AE(ae_title="CONFORMANCE")
        ae.requested_contexts = [build_context(sop, ts) for sop, ts in chunk]
        assoc = ae.associate("127.0.0.1", node.config.node.port, ae_title=node.config.node.ae_title)
        assert assoc.is_established
        accepted |= {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        assoc.release()
    expected = {(sop, ts) for sop, syntaxes in tables.items() for ts in syntaxes}
    # the tolerant receive policy (the default, "Any other storage SOP class" row) accepts a private class too
    from node.sopclasses import transfer_syntaxes

    expected |= {("1.3.6.1.4.1.5962.301.1", ts) for ts in transfer_syntaxes(False)}
    assert accepted == expected, (sorted(accepted - expected)[:10], sorted(expected - accepted)[:10])
