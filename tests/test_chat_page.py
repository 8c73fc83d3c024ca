"""The chat page at ``/`` in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by selenium with the system chromedriver, so Selenium Manager never runs): type a
message, watch the reply stream in, and check it equals the API's greedy reply."""
from __future__ import annotations

import shutil

import httpx
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from server_testing import ServerThread, demo_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium missing: install Debian's chromium and chromium-driver "
           "(scripts/setup.sh does it when run as root)")

# Every text node the page puts into an assistant bubble, in order: the page replaces the
# bubble's text on each streamed delta, so the added nodes keep each intermediate state.
OBSERVE = """
window.__snapshots = [];
new MutationObserver((records) => {
  for (const r of records) {
    const bubble = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (!bubble || !bubble.classList.contains("assistant")) continue;
    for (const node of r.addedNodes) if (node.nodeType === 3) window.__snapshots.push(node.data);
  }
}).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def served():
    app = demo_app()
    with ServerThread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,700", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _set(driver, element_id: str, value: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def test_chat_page_streams_the_reply(served, browser, tmp_path):
    url = served
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.getElementById('model').value") == "qwen-demo")
    _set(browser, "temperature", "0")
    _set(browser, "max_tokens", "24")
    browser.execute_script(OBSERVE)

    message = "Repeat: q w e r"
    browser.find_element(By.ID, "input").send_keys(message + Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))

    bubbles = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".msg.user")] == [message]
    reply = browser.execute_script("return document.querySelector('.msg.assistant').textContent")
    snapshots = browser.execute_script("return window.__snapshots")
    assert len(bubbles) == 1 and reply.strip()
    # the text appeared piece by piece: several states, each extending the previous one
    assert len(snapshots) >= 3, snapshots
    for shorter, longer in zip(snapshots, snapshots[1:]):
        assert longer.startswith(shorter) and len(longer) > len(shorter)
    assert snapshots[-1] == reply
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error")
    assert "tokens" in browser.find_element(By.ID, "status").text  # usage chunk was read

    api = httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": message}], "temperature": 0, "max_tokens": 24})
    assert api.json()["choices"][0]["message"]["content"] == reply

    # a second turn sends the history and streams a second reply
    browser.find_element(By.ID, "input").send_keys("Count: a b c" + Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2
    shot = tmp_path / "chat_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000


def test_chat_page_shows_api_errors(served, browser):
    browser.get(served + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.getElementById('model').value") == "qwen-demo")
    _set(browser, "max_tokens", "5000")  # over the context length: the API answers 400
    browser.find_element(By.ID, "input").send_keys("hello" + Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.error"))
    assert "maximum context length" in browser.find_element(By.CSS_SELECTOR, ".msg.error").text
    _set(browser, "max_tokens", "8")  # and the page keeps working
    browser.find_element(By.ID, "input").send_keys("hello" + Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))
