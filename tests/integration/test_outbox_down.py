"""Destination down: Orthanc stopped, results produced, Orthanc started 30 s later -> all arrive, none twice."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from node.outbox import Outbox
from node.sender import Sender
from node.workflow import OutputObject
from testpeers.orthanc import OrthancServer, make_ct_series, make_parametric_map

from conftest import make_config

pytestmark = [pytest.mark.network, pytest.mark.slow]
DOWN_SECONDS = 30.0


def test_everything_arrives_exactly_once_after_the_pacs_comes_back(tmp_path: Path) -> None:
    pacs = OrthancServer(tmp_path / "pacs", ae_title="PACS", peers={"LIVERNODE": ("127.0.0.1", 11112)})
    pacs.start()
    pacs.stop()  # it has run once (storage initialised) and is now down
    cfg = make_config(tmp_path / "var", outbox={"max_attempts": 100, "backoff_initial_seconds": 1,
                                                "backoff_max_seconds": 4},
                      destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.dicom_port,
                                             "outputs": ["parametric-map", "secondary-capture"]}})
    ct = make_ct_series(n_slices=6, rows=16, cols=16, patient_id="DOWN01")
    objs = [OutputObject("parametric-map", make_parametric_map(ct))] + \
        [OutputObject("secondary-capture", d) for d in ct]
    uids = {o.dataset.SOPInstanceUID for o in objs}
    ob = Outbox(cfg)
    sender = Sender(cfg, ob)
    sender.start()
    try:
        down_since = time.monotonic()
        for o in objs:
            ob.produce("down", o)
        time.sleep(DOWN_SECONDS - (time.monotonic() - down_since))
        rows = ob.summary()
        assert {r["state"] for r in rows} == {"retrying"}  # still queued, not parked, while the PACS is down
        assert min(r["attempts"] for r in rows) >= 5  # kept trying with backoff capped at 4 s
        assert all("cannot connect" in r["last_error"] and r["next_attempt"] for r in rows)
        pacs.start()
        came_back = time.monotonic()
        deadline = came_back + 20
        while ob.depths()["sent"] < len(objs) and time.monotonic() < deadline:
            time.sleep(0.1)
        delay = time.monotonic() - came_back
        stored = pacs.instance_count()
    finally:
        sender.stop()
        pacs.stop(graceful=False)
    assert ob.depths() == {"pending": 0, "retrying": 0, "sending": 0, "failed": 0, "sent": len(objs)}
    assert delay < 4 + 2  # at most one capped backoff interval plus sending
    received = Counter(r.sop_instance_uid for r in pacs.received())
    assert received == Counter(uids)  # every object exactly once
    assert stored == len(objs)
