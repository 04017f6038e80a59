"""Safe operation: one node per data dir, a clean message and exit status 3 when a port is taken, the disk
watermark (0xA700 with a comment, a metric, an alert, readiness), no destinations (warning and readiness),
`status` never creating a mistyped data dir, one exit status for unknown cases, `check-config` C-ECHOing real
peers (dcmtk storescp)."""
# mypy: disable-error-code="comparison-overlap"
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE

from node.audit import close_file
from node.cli import main
from node.config import ConfigError, parse_config
from node.service import Node, StartError

import factories as F
from conftest import free_port, make_config, wait_until

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _toml(path: Path, data_dir: Path, port: int, extra: str = "") -> Path:
    path.write_text(f'[node]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n{extra}\n'
                    '[destinations.pacs]\nfolder = "results/pacs"\n'
                    'outputs = ["parametric-map", "secondary-capture", "report", "rtstruct"]\n')
    return path


def test_a_second_node_on_the_same_data_dir_refuses_to_start_naming_the_holder(tmp_path: Path) -> None:
    first = Node(make_config(tmp_path / "var"))
    first.start()
    try:
        with pytest.raises(StartError, match=r"in use by liver-node pid \d+ on"):
            Node(make_config(tmp_path / "var"))  # refused before it opens anything
        # the same through the command line: one line, exit status 3, no traceback
        cfg = _toml(tmp_path / "c.toml", tmp_path / "var", free_port())
        r = _cli("serve", "--config", str(cfg))
        assert r.returncode == 3, r.stderr
        assert f"pid {__import__('os').getpid()}" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("liver-node: cannot start: data dir")
    finally:
        first.stop()
    again = Node(make_config(tmp_path / "var"))  # released at stop: the data dir is free again
    again.start()
    again.stop()


def test_a_refused_second_node_leaves_the_index_untouched(tmp_path: Path) -> None:
    """The lock comes before the index is opened: a second node on a data dir whose index needs a migration must
    not migrate it (nor create any file) while another holds the data dir."""
    data = tmp_path / "var"
    shutil.copytree(ROOT / "tests" / "data" / "datadir-v1", data)  # an old schema: opening it would migrate it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from node.lock import DataDirLock; "
                               "DataDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
                               str(data)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = {p.relative_to(data): (p.stat().st_mtime_ns, p.read_bytes()) for p in data.rglob("*")
                  if p.is_file() and p.name != "liver-node.lock"}
        cfg = _toml(tmp_path / "c.toml", data, free_port())
        r = _cli("serve", "--config", str(cfg))
        assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith(f"liver-node: cannot start: data dir {data} is in use "
                                                            f"by liver-node pid {holder.pid}")
        after = {p.relative_to(data): (p.stat().st_mtime_ns, p.read_bytes()) for p in data.rglob("*")
                 if p.is_file() and p.name != "liver-node.lock"}
        assert after == before  # the index not migrated, no -wal/-shm, no spool, no secret, nothing new
    finally:
        holder.kill()
        holder.wait(10)


@pytest.mark.parametrize("which", ["dicom", "http"])
def test_a_taken_port_gives_one_line_and_exit_status_3(tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        dicom, http = (port, free_port()) if which == "dicom" else (free_port(), port)
        cfg = _toml(tmp_path / "c.toml", tmp_path / "var", dicom,
                    f'[health]\nenabled = true\nhost = "127.0.0.1"\nport = {http}\n')
        t0 = time.time()
        r = _cli("serve", "--config", str(cfg))
    assert r.returncode == 3, r.stderr
    assert time.time() - t0 < 30
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"liver-node: cannot start: {which.upper()} port 127.0.0.1:{port} is already in use by another "
                    f"program; stop it or change [{'node' if which == 'dicom' else 'health'}] port"), r.stderr
    # nothing was left holding the data dir: a node starts on it at once
    node = Node(make_config(tmp_path / "var"))
    node.start()
    node.stop()


def test_below_the_disk_watermark_c_stores_are_refused_with_0xA700_alerted_and_measured(tmp_path: Path,
                                                                                       caplog) -> None:
    free_mb = shutil.disk_usage(tmp_path).free >> 20
    cfg = make_config(tmp_path / "var", node={"min_free_disk_mb": free_mb + 100_000},
                      health={"enabled": True, "port": 0},
                      notifications={"webhooks": {}})
    node = Node(cfg)
    node.start()
    try:
        ae = AE(ae_title="LOWDISK")
        ae.add_requested_context(F.CT)
        assoc = ae.associate("127.0.0.1", cfg.node.port, ae_title="LIVERNODE")
        status = assoc.send_c_store(F.ct_series("P-DISK", 1)[0])
        assoc.release()
        assert status.Status == 0xA700
        assert status.ErrorComment.startswith("cannot store: disk low,") and "MB free < min" in status.ErrorComment
        assert list((tmp_path / "var" / "instances").rglob("*.dcm")) == []  # nothing stored
        assert [p for p in (tmp_path / "var" / "tmp").iterdir() if p.stat().st_size] == []  # spool removed
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.health.port}/metrics", timeout=5).read().decode()
        assert 'livernode_cstore_refusals_total{status="0xA700"} 1.0' in text
        assert "livernode_data_dir_low 1.0" in text
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{node.health.port}/readyz", timeout=5)
        body = json.loads(err.value.read())
        assert err.value.code == 503 and any("min_free_disk_mb" in w for w in body["why"])
        assert wait_until(lambda: "notification disk-low" in caplog.text, timeout=10)  # the alert (and webhook)
        assert "below the watermark" in caplog.text
    finally:
        node.stop()


def test_without_destinations_the_node_warns_and_is_not_ready(tmp_path: Path, caplog) -> None:
    cfg = parse_config({"node": {"host": "127.0.0.1", "port": free_port(), "data_dir": str(tmp_path / "var")},
                        "health": {"enabled": True, "port": 0}})
    node = Node(cfg)
    with caplog.at_level("WARNING"):
        node.start()
    try:
        assert "no destinations configured: results stay in data_dir/outbox and reach nobody" in caplog.text
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{node.health.port}/readyz", timeout=5)
        assert err.value.code == 503 and "no destinations configured" in json.loads(err.value.read())["why"]
    finally:
        node.stop()


def test_status_on_a_missing_data_dir_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "var"
    cfg = _toml(tmp_path / "c.toml", missing, free_port())
    for args in (("status",), ("status", "--json"), ("resend", "X"), ("reprocess", "X"), ("prune", "--dry-run")):
        r = _cli(*args, "--config", str(cfg))
        if args[0] == "prune":  # retention off: nothing to look at
            assert r.returncode == 0 and "retention is off" in r.stdout
            continue
        assert r.returncode == 4, (args, r.stderr)
        assert f"data dir {missing} does not exist" in r.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_check_config_echoes_every_dicom_destination(tmp_path: Path) -> None:
    port = free_port()
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "PEER", str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _open(port), timeout=10)
        ok = tmp_path / "ok.toml"
        ok.write_text(f'[node]\nport = {free_port()}\ndata_dir = "var"\n'
                      f'[destinations.pacs]\nae_title = "PEER"\nhost = "127.0.0.1"\nport = {port}\n'
                      'outputs = ["parametric-map", "secondary-capture", "report", "rtstruct"]\n')
        r = _cli("check-config", "--config", str(ok))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "C-ECHO success" in r.stdout and "all checks passed" in r.stdout
        bad = tmp_path / "bad.toml"
        bad.write_text(ok.read_text() + f'[destinations.tps]\nae_title = "TPS"\nhost = "127.0.0.1"\n'
                                        f'port = {free_port()}\noutputs = ["rtstruct"]\n')
        r = _cli("check-config", "--config", str(bad))
        assert r.returncode == 1
        lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.strip().startswith("destination")}
        assert "C-ECHO success" in lines["pacs"] and "FAILED" in lines["tps"] and "no association" in lines["tps"]
    finally:
        scp.terminate()
        scp.wait(10)
    broken = tmp_path / "broken.toml"
    broken.write_text('[node]\nport = "eleven"\n')
    r = _cli("check-config", "--config", str(broken))
    assert r.returncode == 2 and "config key 'node.port'" in r.stderr


def _open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_dashboard_beyond_loopback_needs_credentials_and_tls() -> None:
    with pytest.raises(ConfigError, match="dashboard.token"):
        parse_config({"health": {"host": "0.0.0.0"}, "dashboard": {"enabled": True}})
    with pytest.raises(ConfigError, match="dashboard.tls"):
        parse_config({"health": {"host": "0.0.0.0"}, "dashboard": {"enabled": True, "token": "x" * 20}})
    with pytest.raises(ConfigError, match="dashboard.token"):
        parse_config({"dashboard": {"token": "short"}})
    parse_config({"health": {"host": "127.0.0.1"}, "dashboard": {"enabled": True}})  # loopback: allowed


def test_an_unusable_data_dir_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    """A file where the data dir should be, a path under a file, a directory the service user cannot write: one
    line naming node.data_dir, exit status 2 (not restarted by systemd), no traceback, nothing created."""
    afile = tmp_path / "var"
    afile.write_text("not a directory\n")
    cfg = _toml(tmp_path / "c.toml", afile, free_port())
    r = _cli("serve", "--config", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"liver-node: config key 'node.data_dir': {afile} is a file, not a " \
                                                "directory", r.stderr
    assert main(["status", "--config", str(cfg)]) == 2 and main(["check-config", "--config", str(cfg)]) == 1
    with pytest.raises(ConfigError, match=f"'node.data_dir': cannot create {afile / 'sub'}: Not a directory$"):
        Node(make_config(afile / "sub"))
    assert afile.read_text() == "not a directory\n"
    # a root-owned data dir the service user (here: nobody) cannot write, as under a wrong systemd setup
    shared = Path(tempfile.mkdtemp(prefix="ln-ro-"))
    try:
        shared.chmod(0o755)
        ro = shared / "var"
        ro.mkdir(mode=0o755)
        cfg = _toml(shared / "c.toml", ro, free_port())
        cfg.chmod(0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                            "node", "serve", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("liver-node: config key 'node.data_dir': ") and "not writable by user" in last, last
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(shared)


def test_check_config_without_destinations_warns_and_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[node]\nport = {free_port()}\ndata_dir = "var"\n')
    r = _cli("check-config", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "WARNING: no destinations configured: results will go nowhere" in r.stdout
    assert any(line.split()[:2] == ["destinations", "(none)"] and line.rstrip().endswith("WARNING")
               for line in r.stdout.splitlines())
    assert "1 problem(s)" in r.stdout


def test_an_index_of_a_newer_version_and_an_unwritable_output_are_one_line_errors(tmp_path: Path, capsys) -> None:
    """A downgrade leaves an index of a newer schema: every command says so in one line with exit status 2 (the
    unit does not restart-loop), and the index is left as it was; `conformance --output` to a folder that does
    not exist is exit status 1 with the reason."""
    import sqlite3

    from node.index import Index, index_path

    data = tmp_path / "var"
    data.mkdir()
    Index(index_path(data)).close()
    db = sqlite3.connect(index_path(data))
    db.execute("UPDATE index_meta SET value='999' WHERE key='schema_version'")
    db.commit()
    db.close()
    cfg = _toml(tmp_path / "c.toml", data, free_port())
    try:
        for argv in (["status"], ["reprocess", "P"], ["resend", "P"], ["release", "P"],
                     ["reassign", "1.2", "--to", "P"]):
            assert main([*argv, "--config", str(cfg)]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert err[-1].startswith("liver-node: config key 'node.data_dir': ") and "index schema 999" in err[-1]
    finally:
        close_file(data)  # the in-process commands' audit file
    r = _cli("serve", "--config", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "has index schema 999" in r.stderr, r.stderr
    db = sqlite3.connect(index_path(data))
    assert db.execute("SELECT value FROM index_meta WHERE key='schema_version'").fetchone() == ("999",)
    db.close()
    assert main(["conformance", "--output", str(tmp_path / "no" / "such" / "conformance.md")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_a_node_refused_by_its_configuration_leaves_the_data_dir_free(tmp_path: Path) -> None:
    """A TLS file that does not load stops the node in its constructor (after the lock): the key is named, and the
    lock and index are released, so the corrected node starts at once on the same data dir."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    tls = {"tls": {"cert_file": str(junk), "key_file": str(junk), "ca_file": str(junk)}}
    with pytest.raises(ConfigError, match=r"security\.tls\.cert_file"):
        Node(make_config(tmp_path / "var", security=tls))
    node = Node(make_config(tmp_path / "var"))
    node.start()
    node.stop()
