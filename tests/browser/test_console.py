"""The console in Debian's headless Chromium, signed in through a real OpenID Connect provider.

An owner signs in on the provider's own login page, requests a store, watches its status turn
``ready`` live (the status reader follows a real API server, where the test plays Argo CD's part by
writing the Application), suspends and resumes it, and cannot open another owner's store; an
operator sees the fleet. axe-core (npm) checks every page for serious accessibility problems, and
each page is saved as a phone-size screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client

from harness import examples, oidc, processes
from harness import stack as harness_stack
from tests.integration.status import support
from webhook import app
from webhook.settings import StatusSettings
from webhook.status.watching import GROUP, PLURAL, VERSION

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CACHE = Path(os.environ.get("STOREOPS_CACHE") or Path.home() / ".cache" / "storeops")
AXE_VERSION = "4.14.1"
#: Where the README's screenshot of the console comes from (written when STOREOPS_UPDATE_SCREENSHOTS=1).
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
pytestmark = [pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"),
              pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the OIDC provider"),
              pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm for axe-core")]
USERS = [oidc.User("jane", "jane-password", "jane@acme-outdoor.example"),
         oidc.User("olga", "olga-password", "olga@platform.example")]


def axe_source() -> str:
    """axe-core from npm, installed once into the harness cache."""
    folder = CACHE / "npm" / f"axe-core-{AXE_VERSION}"
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    if not script.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder),
                        f"axe-core@{AXE_VERSION}"], check=True, timeout=300, capture_output=True)
    return script.read_text()


@pytest.fixture
def served(tmp_path: Path, kube_apiserver: harness_stack.Stack) -> Iterator[tuple[str, str, Path]]:
    apiserver = kube_apiserver
    support.install_application_crd(apiserver)
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    provider = oidc.start(state=tmp_path / "oidc", users=USERS, redirect_uris=[f"{base}/signin/callback"])
    namespace = support.new_namespace(apiserver)
    settings = examples.service_settings(tmp_path, oidc_issuer=provider.issuer, oidc_client_id=oidc.CLIENT_ID,
                                         oidc_client_secret=oidc.CLIENT_SECRET, operators=("olga@platform.example",),
                                         port=port, public_url=base)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace, ledger=tmp_path / "ledger.db",
                            workdir=settings.git.workdir, backoff_min=0.1, tick=0.1)
    server = uvicorn.Server(uvicorn.Config(app.create_app(settings, status=status), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    support.wait_until("the service ready", lambda: httpx.get(f"{base}/readyz").status_code == 200)
    try:
        yield base, namespace, Path(settings.git.remote)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        provider.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--disable-quic",
                 "--disable-sync", "--window-size=390,844", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def sign_in(browser: Any, base: str, username: str, password: str, path: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{base}{path}")
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "username"))  # the provider's own page
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda b: b.current_url.startswith(f"{base}{path}"))


def check_page(browser: Any, axe: str, shots: Path, name: str) -> None:
    """No serious or critical axe-core violation; a phone-size screenshot kept."""
    browser.execute_script(axe)
    result = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(function(r){done(JSON.stringify(r.violations));});")
    serious = [v for v in json.loads(result) if v["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: " + "; ".join(f"{v['id']}: {v['help']}" for v in serious)
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / f"{name}.png"))


def test_an_owner_and_an_operator_in_the_console(served: tuple[str, str, Path], browser: Any, tmp_path: Path,
                                                 kube_apiserver: harness_stack.Stack) -> None:
    base, namespace, remote = served
    custom = client.CustomObjectsApi(support.api_client(kube_apiserver.kubeconfig))
    axe = axe_source()
    shots = tmp_path / "screenshots"
    sign_in(browser, base, "jane", "jane-password", "/console")
    assert "acme-outdoor" in browser.page_source and "bookworm" not in browser.page_source
    check_page(browser, axe, shots, "my-stores")

    browser.get(f"{base}/console/request")
    check_page(browser, axe, shots, "request")
    browser.find_element(By.ID, "id").send_keys("browser-shop")
    browser.find_element(By.ID, "name").send_keys("Browser Shop")
    browser.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda b: b.current_url == f"{base}/console/stores/browser-shop")
    status = browser.find_element(By.CSS_SELECTOR, '.status[data-store="browser-shop"]')
    # Argo CD's part: the Application appears, synced and healthy. The page changes without a reload.
    support.wait_until("the request committed", lambda: "browser-shop" in examples.remote_stores(
        remote))
    body = support.application("browser-shop", namespace)
    body["status"] = support.argo_status(sync="Synced", health="Healthy", phase="Succeeded",
                                         revision=examples.git(remote, "rev-parse", "main").strip())
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    WebDriverWait(browser, 30).until(lambda b: status.text == "ready")
    check_page(browser, axe, shots, "store")

    # The owner's first login: the credentials the store's Job made, shown once.
    password = f"pw-{uuid.uuid4().hex}"
    support.credentials_secret(kube_apiserver, "browser-shop", password)
    browser.find_element(By.XPATH, "//button[@value='credentials']").click()
    WebDriverWait(browser, 15).until(lambda b: "/credentials/" in b.current_url)
    assert browser.find_element(By.ID, "password").text == password
    check_page(browser, axe, shots, "credentials")
    browser.refresh()  # the link again: used
    assert password not in browser.page_source and "used already" in browser.page_source
    browser.get(f"{base}/console/stores/browser-shop")
    assert "They were shown to you once" in browser.page_source

    browser.find_element(By.XPATH, "//button[@value='suspend']").click()
    WebDriverWait(browser, 15).until(lambda b: "Resume the store" in b.page_source)
    support.wait_until("suspended in Git", lambda: examples.remote_stores(remote)[
        "browser-shop"].get("state") == "suspended")
    browser.get(f"{base}/console/stores/browser-shop")
    browser.find_element(By.XPATH, "//button[@value='resume']").click()
    WebDriverWait(browser, 15).until(lambda b: "Suspend the store" in b.page_source)

    browser.get(f"{base}/console/stores/bookworm")
    assert "No stores" in browser.page_source  # not Jane's: as if it did not exist
    browser.get(f"{base}/console/fleet")
    assert "Fleet" not in browser.find_element(By.TAG_NAME, "h1").text

    sign_in(browser, base, "olga", "olga-password", "/console/fleet")
    rows = {r.find_element(By.TAG_NAME, "th").text: r.find_elements(By.TAG_NAME, "td")[0].text
            for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert rows == {"local": "3 / 20", "prod": "2 / 500"}
    check_page(browser, axe, shots, "fleet")
    browser.get(f"{base}/console")
    if os.environ.get("STOREOPS_UPDATE_SCREENSHOTS") == "1":
        browser.set_window_size(1100, 700)
        browser.save_screenshot(str(README_SHOT))
