"""The chat page in a real headless Chromium (Debian's chromium + chromium-driver, through selenium): type a question,
press Send, read the streamed answer; the screenshot goes to reports/chat-page.png."""
import shutil

import pytest

from tests.conftest import ROOT

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
QUESTION = "我发烧咳嗽三天了，该怎么办？"
SCREENSHOT = ROOT / "reports" / "chat-page.png"


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make system-deps` (apt) installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--window-size=900,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_question_in_answer_out(browser, start_server, tiny_gguf):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    url = start_server(tiny_gguf, "--system-prompt", "You are a careful medical assistant.")
    browser.get(url)
    assert "Medical information only" in browser.find_element(By.CLASS_NAME, "notice").text
    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "send").click()
    answer = WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.CSS_SELECTOR, ".assistant[data-done='true']"))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert browser.find_element(By.CLASS_NAME, "user").text == QUESTION
    assert "error" not in answer.get_attribute("class"), answer.text
    assert answer.text.strip(), "the streamed answer is empty"
