"""The chat page at ``/`` in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by selenium with the system chromedriver, so Selenium Manager never runs): type a
message, watch the reply stream in, and check it equals the API's greedy reply; hold a 6-turn
conversation in the model's small context (old turns are trimmed as ``llm chat`` trims them);
no failed request in the browser's console."""
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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


def _console_errors(driver) -> list[str]:
    """Browser console entries about failed loads (404s included) or script errors."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" or "Failed to load resource" in e["message"]]


def _turn(driver, wait, text: str, n: int) -> None:
    driver.find_element(By.ID, "input").send_keys(text + Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == n
               or d.find_elements(By.CSS_SELECTOR, ".msg.error"))


def test_six_turns_fit_the_context_and_the_page_loads_cleanly(served, browser):
    context = httpx.get(served + "/v1/models", timeout=30).json()["data"][0]["max_model_len"]
    assert httpx.get(served + "/favicon.ico", timeout=30).status_code == 200
    browser.get(served + "/")
    browser.get_log("browser")  # start from an empty console
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.getElementById('model').value") == "qwen-demo")
    assert browser.find_element(By.ID, "context").text == f"context {context} tokens"
    _set(browser, "temperature", "0")
    _set(browser, "max_tokens", "64")  # the default: 64 of a 128-token context per reply
    questions = ["What colour is the eel?", "Count: x i a r", "Sort: 5 8 7 9 0",
                 "What comes after n?", "Reverse: a b c", "What colour is the cat?"]
    for n, question in enumerate(questions, start=1):
        _turn(browser, wait, question, n)
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error"), \
            browser.find_element(By.CSS_SELECTOR, ".msg.error").text
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".msg.user")] == questions
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 6
    # the older turns no longer fit beside a 64-token reply: greyed and said so, never sent
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.user.trimmed")
    assert "to fit the" in browser.find_element(By.CSS_SELECTOR, ".note").text
    sent = browser.execute_script("return history.map(t => t.content)")
    assert sent[-2] == questions[-1] and questions[0] not in sent
    prompt = httpx.post(served + "/tokenize", timeout=30, json={"messages": [
        {"role": ["user", "assistant"][i % 2], "content": c} for i, c in enumerate(sent[:-1])]})
    assert prompt.json()["count"] + 1 <= context and prompt.json()["max_model_len"] == context
    assert "context" in browser.find_element(By.ID, "status").text
    assert _console_errors(browser) == []


def test_chat_page_shows_errors(served, browser):
    browser.get(served + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.getElementById('model').value") == "qwen-demo")
    # a message longer than the whole context: said on the page, nothing sent
    browser.find_element(By.ID, "input").send_keys("a b c d " * 80 + Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.error"))
    assert "the model's context holds" in browser.find_element(By.CSS_SELECTOR, ".msg.error").text
    # an error of the API (temperature over 2: 400) is shown with the API's message
    _set(browser, "temperature", "5")
    browser.find_element(By.ID, "input").send_keys("hello" + Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.error")) == 2)
    assert "temperature" in browser.find_elements(By.CSS_SELECTOR, ".msg.error")[1].text
    _set(browser, "temperature", "0")  # and the page keeps working
    _set(browser, "max_tokens", "8")
    browser.find_element(By.ID, "input").send_keys("hello" + Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))
