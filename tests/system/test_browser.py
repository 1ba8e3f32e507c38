"""The demo page in a real headless Chromium against the real server on loopback.

Needs Debian's ``chromium`` and ``chromium-driver`` (the test script installs them where
it can); skipped with the reason where they are absent.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import DATA, image_bytes

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed"), pytest.mark.slow]
LSP_PHOTO = DATA / "lsp" / "images" / "im1003.jpg"


@pytest.fixture
def browser(tmp_path):
    from benchmarks.screenshot import chrome  # the docs screenshot is taken the same way

    driver = chrome(tmp_path / "profile")
    yield driver
    driver.quit()


def canvas_colour_counts(driver) -> dict[str, int]:
    """How many canvas pixels carry the skeleton's right (red) / left (green) limb colours."""
    return driver.execute_script("""
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let red = 0, green = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i] > 200 && d[i+1] < 90 && d[i+2] < 90) red++;
          if (d[i] < 90 && d[i+1] > 170 && d[i+2] < 120) green++;
        }
        return {red, green};""")


def test_upload_shows_skeleton_heatmap_and_stages(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, _ = server
    if not LSP_PHOTO.exists():
        pytest.skip("needs a real photo with people (../shared datasets)")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(LSP_PHOTO.read_bytes())
    browser.get(url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 6)
    Select(browser.find_element(By.ID, "model")).select_by_value("hourglass")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
    before = canvas_colour_counts(browser)
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-drawn") == "hourglass")
    after = canvas_colour_counts(browser)
    assert after["red"] > before["red"] + 20 and after["green"] > before["green"] + 20, (before, after)
    assert not browser.find_element(By.ID, "clip").is_displayed()  # a photo shows no video player
    assert len(browser.find_elements(By.CSS_SELECTOR, "#kp tr")) == 20  # header + 19 joints
    people = len(browser.find_elements(By.CSS_SELECTOR, "#person option"))
    assert people >= 1 and "person(s)" in browser.find_element(By.ID, "status").text
    # heatmap overlay for one joint
    Select(browser.find_element(By.ID, "joint")).select_by_visible_text("head_top")
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-heatmap") == "head_top")
    # the stage slider covers the hourglass's two stacks
    slider = browser.find_element(By.ID, "stageSlider")
    assert slider.get_attribute("max") == "2" and slider.is_enabled()
    shot = Path(os.environ.get("POSE_SCREENSHOT", tmp_path / "page.png"))
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    # compare all
    Select(browser.find_element(By.ID, "model")).select_by_value("__all__")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "compare").get_attribute("data-done") == "5")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare figure")) == 5


def test_a_photo_without_people_says_so(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    photo = tmp_path / "wall.png"
    photo.write_bytes(image_bytes("PNG", (240, 180)))
    browser.get(url + "/")
    wait = WebDriverWait(browser, 20)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-drawn") == "none")
    assert "no person found" in browser.find_element(By.ID, "status").text


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_the_api_docs_render_from_local_assets_under_the_csp(server, browser):
    """/docs with no network: Swagger UI from this server, every operation listed, and the
    page's Content-Security-Policy blocks nothing it needs."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser.get(url + "/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/pose", "/pose/compare", "/pose/render", "/models"} <= paths
    assert csp_violations(browser) == []
    scripts = browser.execute_script("return [...document.scripts].map(s => s.src)")
    assert scripts and all(s.startswith(url) for s in scripts), scripts


def test_the_demo_page_runs_under_its_csp(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, _ = server
    browser.get(url + "/")
    WebDriverWait(browser, 20).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) >= 2)
    assert csp_violations(browser) == []


@pytest.mark.parametrize("width", [390, 1024])
def test_the_page_fits_the_window_and_a_dragged_box_lands_under_the_pointer(server, browser, tmp_path, width):
    """On a phone (390 px) and a small laptop window (1024 px) the page needs no sideways
    scrolling, and a box dragged on the shrunk picture is the box under the pointer, in
    image pixels (the picture is drawn smaller than the canvas's own size there)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    if not LSP_PHOTO.exists():
        pytest.skip("needs a real photo with people (../shared datasets)")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(LSP_PHOTO.read_bytes())
    browser.set_window_size(width, 900)
    browser.get(url + "/")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "run").is_enabled())
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    canvas = browser.find_element(By.ID, "canvas")
    # on a phone the picture sits below the controls: bring all of it into view first, so
    # the pointer's offsets are measured from the picture's own centre
    browser.execute_script("document.getElementById('canvas').scrollIntoView({block: 'start'})")
    shown_w, shown_h, internal_w, photo_w, photo_h = browser.execute_script(
        "const c = document.getElementById('canvas'), r = c.getBoundingClientRect();"
        "return [r.width, r.height, c.width, photo.width, photo.height];")
    assert shown_w < internal_w, "the picture should be drawn shrunk at this width"
    # drag from a quarter to three quarters of the shown picture (offsets from its centre)
    (ActionChains(browser).move_to_element_with_offset(canvas, -shown_w / 4, -shown_h / 4).click_and_hold()
     .move_to_element_with_offset(canvas, shown_w / 4, shown_h / 4).release().perform())
    box = browser.execute_script("return box")
    assert box["x"] == pytest.approx(photo_w / 4, abs=0.02 * photo_w)
    assert box["y"] == pytest.approx(photo_h / 4, abs=0.02 * photo_h)
    assert box["w"] == pytest.approx(photo_w / 2, abs=0.02 * photo_w)
    assert box["h"] == pytest.approx(photo_h / 2, abs=0.02 * photo_h)


@pytest.mark.parametrize("width", [390, 1300])
def test_a_clip_plays_with_its_tracked_skeletons_in_sync(server, browser, tmp_path, width):
    """Upload a clip of a real athlete walking: the page analyses it, draws the tracked
    skeleton over the playing clip, and seeking redraws the frame under the playhead."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.helpers import clip_bytes

    pytest.importorskip("av")
    url, _ = server
    if not LSP_PHOTO.exists():
        pytest.skip("needs a real photo with people (../shared datasets)")
    person = np.asarray(Image.open(LSP_PHOTO).convert("RGB").resize((120, 160)))

    def draw(i: int) -> np.ndarray:
        frame = np.full((240, 320, 3), 110, np.uint8)
        frame[40:200, 20 + 8 * i: 140 + 8 * i] = person
        return frame

    video = tmp_path / "walk.webm"
    video.write_bytes(clip_bytes(20, "webm", "libvpx-vp9", size=(320, 240), rate=10, draw=draw))
    browser.set_window_size(width, 900)
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    browser.find_element(By.ID, "file").send_keys(str(video))
    wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
    assert browser.execute_script("return document.getElementById('clip').videoWidth") == 320
    assert browser.find_element(By.ID, "clip").is_displayed()
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-tracks") is not None)
    assert int(browser.find_element(By.ID, "canvas").get_attribute("data-tracks")) >= 1
    assert "frames at" in browser.find_element(By.ID, "status").text
    frames = browser.execute_script("return clip.frames.map((f) => f.persons.length)")
    assert len(frames) == 20 and sum(n > 0 for n in frames) >= 15
    colours = canvas_colour_counts(browser)
    assert colours["red"] + colours["green"] > 20  # a skeleton over the first frame
    browser.execute_script("document.getElementById('clip').currentTime = 1.55")
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-frame") == "15")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert csp_violations(browser) == []
