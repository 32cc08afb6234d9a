"""The request page in Debian's headless Chromium: fill, submit, see errors, then the status page."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from harness import examples
from webhook import app

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = examples.service_settings(tmp_path, port=port)
    server = uvicorn.Server(uvicorn.Config(app.create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started or httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def fill(browser: webdriver.Chrome, store_id: str) -> None:
    for name, value in (("id", store_id), ("name", "Browser Shop"), ("owner_name", "Ann Example"),
                        ("owner_email", "ann@example.com")):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    Select(browser.find_element(By.ID, "engine")).select_by_value("medusa")
    Select(browser.find_element(By.ID, "plan")).select_by_value("small")
    Select(browser.find_element(By.ID, "cluster")).select_by_value("local")


def test_fill_see_the_id_error_then_submit_and_follow_the_status(base_url: str, browser: webdriver.Chrome,
                                                                 tmp_path: Path) -> None:
    browser.get(base_url + "/")
    assert browser.title == "Request a store"
    # Every field has a label the screen reader announces.
    for name in ("id", "name", "engine", "plan", "cluster", "owner_name", "owner_email"):
        assert browser.find_element(By.CSS_SELECTOR, f'label[for="{name}"]').text

    fill(browser, "Bad Id!")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The answer is a new page: wait for it rather than racing the submit.
    error = WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "id-error"))
    assert "lower-case letters" in error.text
    id_field = browser.find_element(By.ID, "id")
    assert id_field.get_attribute("aria-invalid") == "true"
    assert id_field.get_attribute("aria-describedby") == "id-error"
    assert id_field.get_attribute("value") == "Bad Id!"
    assert browser.find_element(By.ID, "owner_email").get_attribute("value") == "ann@example.com"

    fill(browser, "browser-shop")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: "/requests/" in b.current_url)
    assert "browser-shop" in browser.find_element(By.TAG_NAME, "h1").text
    # The page refreshes itself until the request is committed.
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "status").text == "committed")
    assert browser.find_element(By.ID, "commit").text
    assert "browser-shop" in examples.remote_stores(tmp_path / "remote.git")
    browser.save_screenshot(str(tmp_path / "status.png"))
