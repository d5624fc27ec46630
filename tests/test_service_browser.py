"""The meeting page in a real browser (Debian's chromium, headless, driven by Selenium through chromium-driver).

A trial built from the worked example waits for the joint decision after dose 1: the investigator signs in,
sees the pending decision, signs; the sponsor is still missing; the sponsor signs in a second browser session;
the page shows the next cohort.  Screenshots go to ci-artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from _service_server import ROOT, WORKED_EXAMPLE, Server, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = ROOT / "ci-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="chromium and chromium-driver are not installed (Debian: apt-get install "
                                       "chromium chromium-driver)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("browser")) as running:
        assert running.call("POST", "/v1/trials", {"id": "meeting", "protocol": "nct07117175"}, who="admin")[0] == 201
        assert running.call("POST", "/v1/trials/meeting/events", WORKED_EXAMPLE, who="investigator")[0] == 201
        yield running


@pytest.fixture
def browser_factory(tmp_path: Path) -> Iterator[Any]:
    """New headless browser sessions (each its own profile: a second person at the meeting)."""
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def start() -> Any:
        options = webdriver.ChromeOptions()
        assert CHROMIUM is not None and DRIVER is not None
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--window-size=1300,1600", f"--user-data-dir={tmp_path / f'profile{len(drivers)}'}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def ready(driver: Any) -> None:
    """Wait until the page has shown a whole refresh (it marks the body data-state="ready")."""
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                    == "ready")


def sign_in(driver: Any, server: Server, who: str) -> None:
    driver.get(f"{server.url}/meeting?trial=meeting")
    driver.find_element(By.ID, "token").send_keys(server.tokens[who])
    driver.find_element(By.ID, "signin-button").click()
    ready(driver)
    assert "verified" in text(driver, "chain")


def click(driver: Any, button: str) -> None:
    """Press a sign button and wait for the page to show the trial after it."""
    driver.find_element(By.ID, button).click()
    ready(driver)


def text(driver: Any, element: str) -> str:
    return str(driver.find_element(By.ID, element).text)


def signoff(driver: Any) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#signoff tbody tr")
    return {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text for r in rows}


def buttons(driver: Any) -> list[str]:
    return [b.get_attribute("id") for b in driver.find_elements(By.CSS_SELECTOR, "#sign-buttons button")]


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"service-meeting-{name}.png"))


def no_errors(driver: Any) -> None:
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_the_meeting_signs_a_joint_decision_in_two_sessions(server: Server, browser_factory: Any) -> None:
    investigator = browser_factory()
    sign_in(investigator, server, "investigator")
    assert text(investigator, "who") == "Dr L. Wang"
    assert text(investigator, "next-action") == "Sign-off needed from investigator and sponsor on one of: escalate, " \
                                                "terminate"
    assert text(investigator, "rule") == "at-pass-one" and text(investigator, "clause")
    assert "escalate: escalate to 2×10^7 cells/kg" in text(investigator, "options")
    assert signoff(investigator) == {"investigator": "still must sign", "sponsor": "still must sign"}
    assert buttons(investigator) == ["sign-escalate-investigator", "sign-terminate-investigator"]
    cohorts = text(investigator, "cohorts")
    assert "P01" in cohorts and "no-dlt" in cohorts and "2025-03-19" in cohorts  # window ended by the day-14 assessment
    assert text(investigator, "pending") == "none"
    assert "1×10^7 CAR-NK cells/kg" in text(investigator, "ladder")
    assert "dlt_adjudicated" in text(investigator, "log")
    shot(investigator, "1-investigator-signed-in")

    click(investigator, "sign-escalate-investigator")
    assert text(investigator, "message") == "Recorded your signature (event 7)."
    assert signoff(investigator) == {"investigator": "signed escalate by Dr L. Wang", "sponsor": "still must sign"}
    assert buttons(investigator) == []
    shot(investigator, "2-investigator-signed")
    no_errors(investigator)

    sponsor = browser_factory()
    sign_in(sponsor, server, "sponsor")
    assert signoff(sponsor) == {"investigator": "signed escalate by Dr L. Wang", "sponsor": "still must sign"}
    assert buttons(sponsor) == ["sign-escalate-sponsor"]  # a role signs the option already signed, or none
    shot(sponsor, "3-sponsor-signed-in")
    click(sponsor, "sign-escalate-sponsor")
    assert text(sponsor, "next-action") == "Enrol 3 patient(s) at dose 2 (cohort 2)"
    assert "R. Zhou" in text(sponsor, "log")
    shot(sponsor, "4-next-cohort")
    no_errors(sponsor)


def test_a_monitor_sees_the_meeting_without_sign_buttons_and_a_wrong_token_is_refused(
        server: Server, browser_factory: Any) -> None:
    monitor = browser_factory()
    sign_in(monitor, server, "monitor")
    assert text(monitor, "roles") == "monitor" and buttons(monitor) == []
    stranger = browser_factory()
    stranger.get(f"{server.url}/meeting?trial=meeting")
    stranger.find_element(By.ID, "token").send_keys("not-a-token-0123456789")
    stranger.find_element(By.ID, "signin-button").click()
    WebDriverWait(stranger, 30).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "signin-error"), "unknown token"))
    assert not stranger.find_element(By.ID, "meeting").is_displayed()
