"""Shared fixtures: configs in tmp dirs, free loopback ports, an in-process node; the max-slope convention
written out for the phantom-truth tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset
from pynetdicom import AE

from node.config import Config, parse_config
from node.errors import AnalysisError
from node.registry import DEFAULT_REGISTRY, Registry
from node.workflow import InputSelection, OutputObject, RunContext, Workflow, WorkflowResult

#: Set by test_netfast.test_stock_pynetdicom_passes_the_receive_tests: run as if pynetdicom were a version the fast
#: path does not know, so every node in this test run receives with stock pynetdicom (the fallback).
STOCK_PYNETDICOM = os.environ.get("LIVER_NODE_TEST_STOCK_PYNETDICOM") == "1"
_STOCK_WRAPPER = ("import sys, runpy, node.netfast as n; n.SUPPORTED_PYNETDICOM = (); sys.argv[0] = 'node'; "
                  "runpy.run_module('node', run_name='__main__')")


@pytest.fixture(autouse=True)
def _stock_pynetdicom(monkeypatch: pytest.MonkeyPatch) -> None:
    if STOCK_PYNETDICOM:
        import node.netfast

        monkeypatch.setattr(node.netfast, "SUPPORTED_PYNETDICOM", ())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, poll: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(poll)
    return False


def start_node_process(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m node serve --config cfg` in its own process; returns once it accepts connections on `port`."""
    root = Path(__file__).resolve().parents[1]
    start = ["-c", _STOCK_WRAPPER] if STOCK_PYNETDICOM else ["-m", "node"]
    p = subprocess.Popen([sys.executable, *start, "serve", "--config", str(cfg)], cwd=root,
                         stdout=subprocess.DEVNULL, stderr=open(log, "a"))
    end = time.time() + 30
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError(f"node did not start: {log.read_text()[-3000:]}")


def store_over_dicom(port: int, datasets: Sequence[Dataset], calling: str = "MODALITY") -> None:
    """C-STORE `datasets` to a node on 127.0.0.1 in one pynetdicom association; every store must succeed."""
    ae = AE(ae_title=calling)
    for uid in {ds.SOPClassUID for ds in datasets}:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A Config for tests: loopback, free port, given data dir; `sections` override/extend TOML tables."""
    raw: dict[str, Any] = {
        "node": {"ae_title": "LIVERNODE", "host": "127.0.0.1", "port": free_port(), "data_dir": str(data_dir)},
        "completion": {"stable_seconds": 2},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return parse_config(raw, base_dir=data_dir)


class RecordingSink:
    """Stands in for the outbox where a test looks only at what analyses produce."""

    def __init__(self) -> None:
        self.items: list[tuple[str, OutputObject]] = []

    def produce(self, case_id: str, obj: OutputObject) -> list[int]:
        self.items.append((case_id, obj))
        return [len(self.items)]


@dataclass(frozen=True)
class StandInMeasurements:
    note: str = "stand-in"


StandInRun = Callable[[RunContext], "list[OutputObject] | None"]


def _unavailable(ctx: RunContext) -> list[OutputObject] | None:
    raise AnalysisError("no analysis available in this version")


def stand_in(real: Workflow[Any, Any], run: StandInRun) -> Workflow[Any, Any]:
    """A workflow with the roles, rules and settings of `real` whose run is `run` (it returns outputs or None)."""

    class StandIn(Workflow[Any, StandInMeasurements]):
        name, title, procedure, needs, uses = real.name, real.title, real.procedure, real.needs, real.uses
        depends_on, role_rules, settings_type = real.depends_on, real.role_rules, real.settings_type
        measurements_type = StandInMeasurements

        def parse_settings(self, table, common):
            return real.parse_settings(table, common)

        def select_inputs(self, case, settings):
            return InputSelection()

        def run(self, ctx, settings):
            return WorkflowResult(real.name, StandInMeasurements(), list(run(ctx) or []))

    return StandIn()


def stand_ins(runs: dict[str, StandInRun]) -> Registry:
    """The node's workflows, each running `runs[name]` instead of its analysis (unavailable when not given)."""
    return Registry([stand_in(wf, runs.get(wf.name, _unavailable)) for wf in DEFAULT_REGISTRY])


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Any]:
    """Start in-process nodes (stopped at teardown): node_factory(config=None, sink=None, workflows=None);
    `workflows` (name -> stand-in run, see stand_ins) replaces the analyses, and there is no case report."""
    from node.service import Node

    started: list[Node] = []

    def start(config: Config | None = None, sink: Any = None, workflows: dict[str, StandInRun] | None = None) -> Node:
        cfg = config or make_config(tmp_path / "var")
        node = Node(cfg, sink=sink or RecordingSink())
        if workflows is not None:  # stand-in analyses: no case report either
            node.runner.registry = stand_ins(workflows)
            node.runner.report = None
        node.start()
        started.append(node)
        return node

    yield start
    for n in started:
        n.stop()


def leftover_partials(tmp_dir: Path) -> list[Path]:
    """Spool files in a node's tmp folder that hold data (a partial write left behind). The SCP keeps up to
    _SpoolPool.SIZE *empty* files made ahead there; those are not partial writes."""
    from node.scp import _SpoolPool

    files = list(Path(tmp_dir).iterdir())
    assert len(files) <= _SpoolPool.SIZE, files
    return [p for p in files if p.stat().st_size > 0]


def convention_max_slope(t: np.ndarray, c: np.ndarray, aorta: np.ndarray, portal: np.ndarray,
                         spleen: np.ndarray) -> tuple[float, float, float]:
    """(ALP, PVP, HPI) by the textbook maximum slope (science.md 1a), written out again for the tests: the truth
    is checked against this, not against the phantom's or the node's code."""
    t_spl = t[np.argmax(spleen)]
    art = [(c[i + 1] - c[i]) / (t[i + 1] - t[i]) for i in range(len(t) - 1) if t[i + 1] <= t_spl]
    por = [(c[i + 1] - c[i]) / (t[i + 1] - t[i]) for i in range(len(t) - 1) if t[i] >= t_spl]
    alp = 6000.0 * max(art) / max(aorta)
    pvp = 6000.0 * max(por) / max(portal)
    return alp, pvp, 100.0 * alp / (alp + pvp)


@pytest.fixture(scope="session")
def ops_case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A node with dashboard, metrics and webhooks on, after a phantom case and a waiting case (tests/opscase.py)."""
    from opscase import start_ops_case

    case = start_ops_case(tmp_path_factory.mktemp("ops"))
    yield case
    case.stop()
