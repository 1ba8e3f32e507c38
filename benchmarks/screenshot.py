"""``poseserve screenshot``: docs/screenshot.png taken from today's page, with the shipped models.

It drives the page exactly as the browser tests do (the same headless Chromium set-up,
``chrome``, which the tests import): a real server on loopback, a photo uploaded through
the file input, *Estimate pose* clicked, the skeletons drawn, one joint's heatmap laid
over the chosen person; then the window is saved. Needs Debian's ``chromium`` and
``chromium-driver`` and the ``test`` extra (selenium).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

PHOTO = Path("coco_dev") / "images" / "000000008690.jpg"  # two girls and a goat: an everyday photo


def chrome(profile: Path, width: int = 1300, height: int = 900):
    """Headless Chromium as the browser tests run it (sandbox off: containers; no network
    services; the browser log kept, to see Content-Security-Policy violations)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("needs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def take(url: str, photo: Path, out: Path, joint: str = "left_wrist") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        browser = chrome(Path(profile))
        try:
            browser.get(url + "/")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) > 1)
            browser.find_element(By.ID, "file").send_keys(str(photo.resolve()))
            wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
            browser.find_element(By.ID, "run").click()
            wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-drawn") not in (None, "none"))
            Select(browser.find_element(By.ID, "joint")).select_by_visible_text(joint)
            wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-heatmap") == joint)
            browser.save_screenshot(str(out))
        finally:
            browser.quit()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photo", type=Path, help="default: an everyday coco_dev photo from --data")
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--out", type=Path, default=Path("docs/screenshot.png"))


def main(args: argparse.Namespace) -> None:
    from benchmarks.bench import Server

    photo = args.photo or Path(args.data or os.environ.get("POSE_DATA_DIR", "../shared/datasets")) / PHOTO
    server = Server(args.model_dir, threads=0, pool=0)
    try:
        take(server.url, photo, args.out)
    finally:
        server.close()
    print(f"wrote {args.out}")
