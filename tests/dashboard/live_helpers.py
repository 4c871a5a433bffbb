"""Helpers of the dashboard tests: a headless Chromium (the OS package, driven by selenium), a
real ``parainfer run --dashboard`` subprocess, and the serving tests' ``running_server``."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _serving_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("serving_conftest_for_dashboard", ROOT / "tests/serving/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


running_server = _serving_conftest().running_server


def chromium_paths() -> tuple[str, str]:
    """The OS's Chromium and chromedriver (``apt-get install chromium chromium-driver``); the
    test is skipped, saying so, only where they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    return browser, driver


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium under selenium, its console log kept (``get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
                "--window-size=1280,1400"):  # software WebGL (plotly scattergl) without a GPU
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict]:
    """The browser console's entries of level SEVERE (errors) so far."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def card_value(driver: Any, card_id: str) -> str | None:
    """The raw number the page shows in card ``card_id`` (its ``data-value``), or None before it exists."""
    found = driver.find_elements("id", card_id)
    return found[0].get_attribute("data-value") if found else None


def wait_for(predicate: Any, timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    """Poll ``predicate()`` until it returns a truthy value (returned); fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


POISON = (100, 700, 1300)  # records holding the marker (``testing.sleepy_raise_on_marker`` fails them)


def write_input(path: Path, records: int) -> Path:
    """A JSONL input of ``records`` texts of 20-49 words; those at ``POISON`` hold the marker."""
    with path.open("w") as f:
        for i in range(records):
            marker = " @@crash@@" if i in POISON else ""
            f.write(json.dumps({"id": i, "text": "word " * (20 + i % 30) + marker}) + "\n")
    return path


class JobProcess:
    """``parainfer run INPUT -o OUTPUT --dashboard 127.0.0.1:0 --report REPORT ...`` in a
    subprocess on the sleepy test model (the records at ``POISON`` fail); ``url`` is the dashboard's, read from its stderr."""

    def __init__(self, tmp: Path, records: int, ms_per_token: float, *args: str, env: dict[str, str] | None = None):
        self.report = tmp / "report.json"
        cmd = [sys.executable, "-m", "parainfer.cli", "run", str(write_input(tmp / "in.jsonl", records)),
               "-o", str(tmp / "out.jsonl"), "--model", "parainfer.testing:sleepy_raise_on_marker", "--workers", "2",
               "--batch-size", "16", "--bucket-window", "1", "--report", str(self.report),
               "--dashboard", "127.0.0.1:0", *args]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                    "PARAINFER_TEST_MS_PER_TOKEN": str(ms_per_token), **(env or {})}
        self.proc = subprocess.Popen(cmd, env=full_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.stderr: list[str] = []
        found = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                self.stderr.append(line)
                if line.startswith("dashboard: "):
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(60)
        urls = [line.split(" ", 1)[1].strip() for line in self.stderr if line.startswith("dashboard: ")]
        assert urls, f"no dashboard URL on stderr: {''.join(self.stderr)}"
        self.url = urls[0]
        self.base = self.url.rsplit("/dashboard", 1)[0]

    def finish(self, timeout_s: float = 120) -> dict:
        """Wait for the job to end (exit code 1: the poison records failed) and return its run report."""
        assert self.proc.wait(timeout_s) == 1, "".join(self.stderr)
        return json.loads(self.report.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` in a Prometheus text body whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def save_doc_screenshot(driver: Any, name: str) -> None:
    """With ``PARAINFER_DOC_SCREENSHOTS=1``, also save the page as docs/NAME (a small PNG)."""
    if os.environ.get("PARAINFER_DOC_SCREENSHOTS") == "1":
        driver.save_screenshot(str(DOCS / name))
