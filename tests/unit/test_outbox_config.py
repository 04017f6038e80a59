"""Bad outbound configuration stops start-up with a ConfigError that names the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_config
from node.outbox import Outbox
from node.sender import Sender
from testpeers.orthanc import make_pki

from conftest import make_config


def _pacs(**extra) -> dict:
    return {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242, "outputs": ["parametric-map"], **extra}


@pytest.mark.parametrize("dest, key", [
    (_pacs(outputs=["parametric-map", "dose-report"]), "destinations.pacs.outputs[1]"),
    ({k: v for k, v in _pacs().items() if k != "port"}, "destinations.pacs.port"),
    (_pacs(port=70000), "destinations.pacs.port"),
    ({**_pacs(), "host": "pacs host"}, "destinations.pacs.host"),
    (_pacs(tls={"cert_file": "/nonexistent/node.crt", "key_file": "/nonexistent/node.key"}),
     "destinations.pacs.tls.cert_file"),
    ({"folder": "out", "port": 104, "outputs": ["report"]}, "destinations.pacs.port"),
    (_pacs(retries=3), "destinations.pacs.retries"),
])
def test_bad_destination_names_the_key(tmp_path: Path, dest: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, destinations={"pacs": dest})
    assert err.value.key == key
    assert key in str(err.value)


def test_unreadable_certificate_from_a_config_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "certdir").mkdir()  # a directory cannot be read as a file (root can read any mode bits)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[destinations.tps]\nae_title = "TPS"\nhost = "10.0.0.20"\nport = 104\noutputs = ["rtstruct"]\n'
                   '[destinations.tps.tls]\ncert_file = "certdir"\nkey_file = "certdir"\n')
    with pytest.raises(ConfigError, match=r"destinations\.tps\.tls\.cert_file"):
        load_config(cfg)


def test_bad_outbox_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"outbox\.backoff_max_seconds"):
        make_config(tmp_path, outbox={"backoff_initial_seconds": 10, "backoff_max_seconds": 5})
    with pytest.raises(ConfigError, match=r"outbox\.max_attempts"):
        make_config(tmp_path, outbox={"max_attempts": 0})


def test_readable_but_invalid_certificate_stops_sender_construction_naming_the_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cfg = make_config(tmp_path / "var", destinations={"pacs": _pacs(tls={
        "cert_file": str(junk), "key_file": str(pki.client_key), "ca_file": str(pki.ca_cert)})})
    with pytest.raises(ConfigError) as err:
        Sender(cfg, Outbox(cfg))
    assert err.value.key == "destinations.pacs.tls.cert_file"
    cfg = make_config(tmp_path / "var2", destinations={"pacs": _pacs(tls={
        "cert_file": str(pki.client_cert), "key_file": str(pki.client_key), "ca_file": str(junk)})})
    with pytest.raises(ConfigError) as err:
        Sender(cfg, Outbox(cfg))
    assert err.value.key == "destinations.pacs.tls.ca_file"
