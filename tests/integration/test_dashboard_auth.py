"""The dashboard bound beyond loopback: HTTPS only, and every page but /livez and /readyz needs the token (or
basic auth). Checked with Python's HTTP client and in headless chromium (the login form)."""
# mypy: disable-error-code="index"
from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from node.service import Node
from testpeers.orthanc import make_pki

from conftest import RecordingSink, make_config

pytestmark = pytest.mark.network
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def remote_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, ssl.SSLContext]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    cfg = make_config(tmp_path_factory.mktemp("remote") / "var",
                      health={"enabled": True, "host": "0.0.0.0", "port": 0},  # beyond loopback
                      dashboard={"enabled": True, "token": TOKEN, "username": "physicist",
                                 "password": "correct horse battery",
                                 "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}})
    node = Node(cfg, sink=RecordingSink())
    node.start()
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    yield node, ctx
    node.stop()


def _get(node: Node, ctx: ssl.SSLContext, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"https://127.0.0.1:{node.health.port}{path}", headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # look at the redirect itself
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)
    try:
        with opener.open(req, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location") or exc.read().decode()


def test_without_credentials_only_liveness_and_readiness_answer(remote_node) -> None:
    node, ctx = remote_node
    assert _get(node, ctx, "/livez")[0] == 200
    assert _get(node, ctx, "/readyz")[0] in (200, 503)
    assert _get(node, ctx, "/ui/") == (303, "/ui/login")
    for path in ("/metrics", "/status", "/ui/audit"):
        code, _ = _get(node, ctx, path, {"Accept": "application/json"} if path != "/ui/audit" else None)
        assert code in (401, 303), path
    assert _get(node, ctx, "/metrics", {"Authorization": "Bearer wrong-token-0000000000"})[0] == 401


def test_token_or_basic_auth_opens_every_page(remote_node) -> None:
    node, ctx = remote_node
    code, body = _get(node, ctx, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and "livernode_cases" in body
    basic = base64.b64encode(b"physicist:correct horse battery").decode()
    code, body = _get(node, ctx, "/ui/", {"Authorization": f"Basic {basic}"})
    assert code == 200 and "No cases yet" in body
    wrong = base64.b64encode(b"physicist:wrong").decode()
    assert _get(node, ctx, "/ui/", {"Authorization": f"Basic {wrong}"})[0] == 303


def test_plain_http_is_not_served(remote_node) -> None:
    node, _ = remote_node
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{node.health.port}/livez", timeout=5).read()


def test_the_browser_is_refused_without_the_token_and_let_in_with_it(remote_node, tmp_path: Path) -> None:
    node, _ = remote_node
    driver = chromium(tmp_path / "profile", insecure_tls=True)
    try:
        driver.get(f"https://127.0.0.1:{node.health.port}/ui/")
        assert driver.current_url.endswith("/ui/login")
        assert "Cases" not in driver.find_element(By.TAG_NAME, "h1").text
        driver.find_element(By.NAME, "token").send_keys("not-the-token-000000")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located((By.CLASS_NAME, "error")))
        assert "Wrong token" in driver.page_source
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 10).until(expected_conditions.url_matches(r"/ui/$"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "Cases"
        cookie = driver.get_cookie("livernode_token")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    finally:
        driver.quit()
