"""deploy/: the systemd unit passes `systemd-analyze verify`, the sysusers file creates the user, and the
container files agree with each other (the node's config loads and points at the compose Orthanc)."""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from node.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "liver-node.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: install Debian's 'systemd' package"
    # verify checks that ExecStart exists; on this test machine the node is not installed under /opt, so verify
    # against a root holding the system's units plus a stand-in executable at the unit's ExecStart path.
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    binary = _unit()["Service"]["ExecStart"].split()[0]
    stub = root / binary.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    res = subprocess.run([exe, "verify", f"--root={root}", UNIT.name], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys or unparsable values: any output at all is a finding.
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_a_misspelt_key_would_be_caught(tmp_path: Path) -> None:
    """The check above can fail: the same procedure reports a unit with a typo."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/bad.service").write_text("[Service]\nExecStart=/bin/true\nRestartt=always\n")
    res = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "bad.service"], capture_output=True,
                         text=True, timeout=60)
    assert "Unknown key" in res.stderr


def test_unit_runs_as_a_dedicated_user_restarts_on_failure_and_owns_its_data_dir() -> None:
    svc = _unit()["Service"]
    assert svc["User"] == svc["Group"] == "liver-node"
    assert svc["Restart"] == "on-failure"
    assert svc["StateDirectory"] == "liver-node"
    assert svc["ExecStart"].endswith("serve --config /etc/liver-node/config.toml")
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"


def test_sysusers_file_creates_the_service_user(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(["systemd-sysusers", f"--root={root}", str(DEPLOY / "liver-node.sysusers")], check=True,
                   capture_output=True, timeout=60)
    passwd = (root / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("liver-node:"))
    assert user[5] == "/var/lib/liver-node" and user[6].endswith("nologin")


def test_container_files_agree() -> None:
    cfg = load_config(DEPLOY / "config.container.toml")
    orthanc = json.loads((DEPLOY / "orthanc.json").read_text())
    compose = (DEPLOY / "compose.yaml").read_text()
    dockerfile = (DEPLOY / "Dockerfile").read_text()

    pacs = next(d for d in cfg.destinations if d.name == "pacs")
    assert (pacs.ae_title, pacs.port) == (orthanc["DicomAet"], orthanc["DicomPort"])
    assert re.search(rf"^  {re.escape(pacs.host or '')}:$", compose, re.M), "PACS host must be the compose service name"
    assert re.search(r"^  node:$", compose, re.M)
    # Orthanc accepts stores only from the node's AE title, at the node's compose host name.
    assert [cfg.node.ae_title, "node", cfg.node.port] in orthanc["DicomModalities"].values()
    assert orthanc["DicomAlwaysAllowStore"] is False
    # The image's config, data volume, ports and health check line up with the config.
    assert "COPY deploy/config.container.toml /etc/liver-node/config.toml" in dockerfile
    assert f"node-data:{cfg.node.data_dir}" in compose
    assert f'"{cfg.node.port}:{cfg.node.port}"' in compose
    assert cfg.health.enabled and f"127.0.0.1:{cfg.health.port}/readyz" in dockerfile
    assert re.search(r"^USER liver-node$", dockerfile, re.M)
    assert "dockerfile: deploy/Dockerfile" in compose


@pytest.mark.parametrize("name", ["README.md", "compose.yaml", "Dockerfile", "liver-node.service"])
def test_deploy_files_exist_and_are_documented(name: str) -> None:
    text = (DEPLOY / name).read_text()
    assert text.strip()
    if name != "README.md":
        assert name in (DEPLOY / "README.md").read_text()


def test_the_systemd_config_keeps_its_data_under_the_units_state_directory() -> None:
    cfg = load_config(DEPLOY / "config.systemd.toml")
    assert cfg.node.data_dir == Path("/var/lib/liver-node") == Path("/var/lib") / _unit()["Service"]["StateDirectory"]
    assert cfg.health.host == "127.0.0.1" and cfg.dashboard.enabled and cfg.retention.enabled
    # exit statuses 2 (configuration) and 3 (port or data dir in use) are not restarted: no restart loop
    assert set(_unit()["Service"]["RestartPreventExitStatus"].split()) == {"2", "3"}


def test_install_script_installs_from_one_directory_and_keeps_an_existing_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {"DESTDIR": str(root), "SKIP_VENV": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(DEPLOY / "install.sh")], env=env, capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert (root / "etc/systemd/system/liver-node.service").read_text() == UNIT.read_text()
    assert (root / "etc/liver-node/config.toml").read_text() == (DEPLOY / "config.systemd.toml").read_text()
    assert (root / "usr/lib/sysusers.d/liver-node.conf").is_file()
    assert (root / "opt/liver-node/deploy/README.md").is_file()
    (root / "etc/liver-node/config.toml").write_text("# site settings\n")
    r = subprocess.run(["bash", str(DEPLOY / "install.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "kept the existing" in r.stdout
    assert (root / "etc/liver-node/config.toml").read_text() == "# site settings\n"


def test_dockerignore_keeps_patient_data_and_environments_out_of_the_build_context() -> None:
    text = (DEPLOY.parent / ".dockerignore").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything excluded, then only what the Dockerfile copies
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?:--\S+ )?(.+) \S+$", (DEPLOY / "Dockerfile").read_text(), re.M))
    sources = {s for c in copied for s in c.split()}
    assert sources <= allowed, sources - allowed
    assert not ({".venv", "var", "tests", ".git"} & allowed) and "**/*.dcm" in lines
    base = re.search(r"^FROM (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base  # pinned


def test_install_script_checks_the_config_as_the_service_user(tmp_path: Path) -> None:
    """install.sh runs check-config through runuser as liver-node, after making the state directory it owns; as a
    user other than root, check-config sees what the service will see: a root-owned data dir is not writable
    (root would have called it fine). Run here with setpriv as nobody: runuser cannot exec this checkout's Python,
    which lives under /root (mode 0700) on the test machine."""
    script = (DEPLOY / "install.sh").read_text()
    calls = [line.strip() for line in script.splitlines()
             if "bin/liver-node " in line and not line.lstrip().startswith("#")]
    assert calls and all(c.startswith("runuser -u liver-node -- /opt/liver-node/venv/bin/liver-node check-config ")
                         for c in calls)
    assert script.index("install -d -o liver-node -g liver-node -m 0750 /var/lib/liver-node") < script.index(calls[0])
    import os
    import sys
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="ln-install-"))
    try:
        shared.chmod(0o755)
        (shared / "var").mkdir(mode=0o755)  # root's, like a state directory never given to the service user
        cfg = shared / "config.toml"
        cfg.write_text(f'[node]\nport = 11112\ndata_dir = "{shared / "var"}"\n'
                       '[destinations.pacs]\nfolder = "results/pacs"\noutputs = ["secondary-capture"]\n')
        cfg.chmod(0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "node",
                            "check-config", "--config", str(cfg)], capture_output=True, text=True, timeout=120,
                           cwd=DEPLOY.parent, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert r.returncode == 1, r.stdout + r.stderr
        row = next(line for line in r.stdout.splitlines() if line.strip().startswith("data_dir"))
        assert "NOT WRITABLE by this user" in row and row.rstrip().endswith("FAILED")
    finally:
        shutil.rmtree(shared)
