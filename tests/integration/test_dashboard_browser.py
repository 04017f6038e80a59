"""The dashboard in a real browser (Debian's chromium, headless, via chromedriver) on a phantom case: the case
list, a waiting case showing why, a done case with its pictures and deliveries, an operator action and its audit
line. Screenshots of each page are written next to the test's files (scripts/dashboard_screenshots.py makes the
README's)."""
from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium, full_page_screenshot
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from conftest import wait_until

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _url(ops_case, path: str) -> str:
    return ops_case.http + path


def _case_path(case_id: str) -> str:
    return "/ui/case/" + urllib.parse.quote(case_id, safe="")


def test_case_list_shows_both_cases_their_states_and_why_one_waits(ops_case, browser, tmp_path: Path) -> None:
    browser.get(_url(ops_case, "/ui/"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.case-row")
    text = {r.find_element(By.CSS_SELECTOR, "td a").text: r.text for r in rows}
    assert set(text) == {ops_case.case_id, ops_case.waiting_patient}, text
    assert "done" in text[ops_case.case_id]
    assert "stable" in text[ops_case.waiting_patient] and "waits for spect-ct, planning-ct" in text[
        ops_case.waiting_patient]
    destinations = browser.find_element(By.CSS_SELECTOR, "table.destinations").text
    assert "archive" in destinations and "failing since" in destinations and "Connection refused" in destinations
    full_page_screenshot(browser, tmp_path / "cases.png")
    assert (tmp_path / "cases.png").stat().st_size > 10_000


def test_a_waiting_case_says_what_it_waits_for_and_why_each_series_has_its_role(ops_case, browser) -> None:
    browser.get(_url(ops_case, _case_path(ops_case.waiting_patient)))
    why = browser.find_element(By.ID, "why").text
    assert "gsa: waits for spect-ct, planning-ct" in why
    gsa = browser.find_element(By.ID, "workflow-gsa").text
    assert "waiting" in gsa and "spect-gsa" in gsa
    series = browser.find_element(By.CSS_SELECTOR, "table.series").text
    assert "spect-gsa" in series and "99mTc-GSA" in series  # the role and the classifier's reason in words
    assert browser.find_elements(By.CSS_SELECTOR, ".pictures img") == []


def test_a_done_case_shows_workflows_pictures_and_deliveries(ops_case, browser, tmp_path: Path) -> None:
    browser.get(_url(ops_case, _case_path(ops_case.case_id)))
    for wf, title in (("perfusion", "Liver CT perfusion"), ("gsa", "99mTc-GSA SPECT-guided liver radiotherapy"),
                      ("maa", "99mTc-MAA SPECT planning of Y-90 radioembolization")):
        section = browser.find_element(By.ID, f"workflow-{wf}").text
        assert "done" in section and title in section, section  # named for people, the key beside it
    gsa = browser.find_element(By.ID, "workflow-gsa").text
    assert all(role in gsa for role in ("spect-gsa", "spect-ct", "planning-ct"))
    images = browser.find_elements(By.CSS_SELECTOR, ".pictures img")
    status = ops_case.node.node_status(ops_case.case_id)
    pictures = {o.sop_instance_uid for o in status.case(ops_case.case_id).outputs if o.is_picture}
    assert len(images) == len(pictures) >= 5
    for img in images:  # every picture decoded by the browser: a real PNG of real pixels
        browser.execute_script("arguments[0].scrollIntoView()", img)
        assert wait_until(lambda img=img: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) > 100, timeout=10)
    deliveries = browser.find_elements(By.CSS_SELECTOR, "tr.delivery")
    states = [r.find_element(By.CSS_SELECTOR, ".state").text for r in deliveries]
    outputs = status.case(ops_case.case_id).outputs
    assert len(deliveries) == len(outputs)
    assert states.count("sent") == sum(o.state == "sent" for o in outputs) > 0
    assert states.count("failed") == sum(o.state == "failed" for o in outputs) > 0  # the archive refused
    full_page_screenshot(browser, tmp_path / "case.png")


def test_an_operator_action_is_done_and_audited(ops_case, browser) -> None:
    browser.get(_url(ops_case, _case_path(ops_case.case_id)))
    browser.find_element(By.ID, "resend").click()  # POST, then the browser follows the 303 back to the case
    message = WebDriverWait(browser, 15).until(
        expected_conditions.presence_of_element_located((By.ID, "action-result"))).text
    assert "queued for sending again" in message
    n = int(message.split()[0])
    assert n == len(ops_case.node.outbox.summary(ops_case.case_id))
    events = browser.find_element(By.CSS_SELECTOR, "table.events").text
    assert "operator-action" in events and "action=resend" in events and f"case={ops_case.case_id}" in events
    assert "operator=dashboard:local@127.0.0.1" in events
    # and the resent outputs are delivered again to the folder destinations
    assert wait_until(lambda: all(r["state"] in ("sent", "failed") for r in ops_case.node.outbox.summary(
        ops_case.case_id)), timeout=60)
    browser.get(_url(ops_case, "/ui/audit"))
    assert "action=resend" in browser.find_element(By.CSS_SELECTOR, "table.events").text


def test_a_forged_action_without_the_forms_token_is_refused(ops_case) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(_url(ops_case, _case_path(ops_case.case_id) + "/action/reprocess"),
                                 data=b"csrf=wrong", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    assert ops_case.node.index.get_case(ops_case.case_id).state == "done"


def test_the_pages_read_without_javascript(ops_case, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same content with JavaScript switched off in the browser (the pages carry no script at all)."""
    driver = chromium(tmp_path_factory.mktemp("nojs"))
    try:
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        driver.get(_url(ops_case, _case_path(ops_case.waiting_patient)))
        assert "waits for spect-ct, planning-ct" in driver.find_element(By.ID, "why").text
        assert "<script" not in driver.page_source
    finally:
        driver.quit()
