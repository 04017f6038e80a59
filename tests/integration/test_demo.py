"""`demo` (site QA): a phantom pushed into a running node on its embedded defaults, compared with its truth."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, start_node_process

pytestmark = [pytest.mark.network, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

#: comparisons the demo must make (and the node pass) on the small phantom
MUST_PASS = [
    *(f"{roi} max-slope {p}, {how}" for roi in ("Normal liver", "T1", "T2", "T3") for p in ("ALP", "PVP")
      for how in ("map mean", "ROI curve")),
    "Normal liver DISCM ALP", "Normal liver DISCM PVP", "T1 DISCM ALP", "T1 DISCM PVP", "T2 DISCM ALP",
    "T2 DISCM PVP", "T3 DISCM ALP", "T3 DISCM PVP",
    "FLS volume", "ITV volume", "PTV volume", "registration translation error", "registration rotation error",
    "MAA T/N T1", "MAA T/N T2", "MAA T/N T3",
    "Y-90 predicted mean dose liver", "Y-90 predicted mean dose normal_liver", "Y-90 predicted mean dose T1",
    "Y-90 predicted mean dose T2", "Y-90 predicted mean dose T3", "Y-90 predicted mean dose lungs",
    "Y-90 delivered/predicted T1", "Y-90 delivered/predicted T2", "Y-90 delivered/predicted T3",
    "Y-90 delivered/predicted liver", "GSA plan FLV20Gy", "GSA plan F20Gy", "GSA plan mean dose whole liver",
    "GSA plan mean dose FLS", "GSA plan mean dose ITV", "GSA plan mean dose PTV",
]


def test_demo_against_a_node_with_folder_destinations(tmp_path: Path) -> None:
    port = free_port()
    shipped = (ROOT / "config.toml").read_text()
    cfg = tmp_path / "config.toml"  # the shipped file, on a free port and a short quiet period
    cfg.write_text(shipped.replace("port = 11112", f"port = {port}").replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
                   .replace("stable_seconds = 30", "stable_seconds = 3"))
    node = start_node_process(cfg, port, tmp_path / "node.log")
    try:
        r = subprocess.run([sys.executable, "-m", "node", "demo", "--config", str(cfg), "--timeout", "900",
                            "--workdir", str(tmp_path / "phantom")], cwd=ROOT, capture_output=True, text=True,
                           timeout=1200)
    finally:
        node.terminate()
        node.wait(timeout=60)
    out = r.stdout
    (tmp_path / "demo.out").write_text(out)
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]  # 1 = some comparison out of tolerance
    assert "case PHANTOM0 done" in out and "results all delivered" in out, out[-3000:]
    comparison = out.split("5. comparison with the phantom's truth")[1]
    rows = {m.group(1).strip(): m.group(2) for m in re.finditer(r"^ +(\S.*?) {2,}\S+ +\S+ +.+? +(ok|OUT) *$",
                                                                 comparison, re.M)}
    for quantity in MUST_PASS:
        matching = [v for k, v in rows.items() if k.startswith(quantity)]
        assert matching and all(v == "ok" for v in matching), (quantity, rows)
    assert "OUT" not in rows.values() and len(rows) >= len(MUST_PASS)
    results = tmp_path / "var" / "results"
    assert list((results / "pacs").rglob("*.dcm")) and list((results / "tps").rglob("*.dcm"))
