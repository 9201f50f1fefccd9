"""comparison.html opened in a real headless Chromium: it renders its tables and images, with nothing fetched from outside."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason=f"no headless browser installed ({', '.join(BROWSERS)}); apt install chromium")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]


def _browser(*arguments: str, cwd) -> subprocess.CompletedProcess:
    # A fresh profile folder per call: Chromium refuses a second instance on a profile in use.
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_page_renders_its_tables_and_plots(comparison, tmp_path):
    url = comparison["comparison.html"].resolve().as_uri()
    dom = _browser("--virtual-time-budget=5000", "--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r"<tr>(.*?)</tr>", re.search(r'<table id="models">(.*?)</table>', html, re.S).group(1), re.S)
    assert len(rows) == 1 + 6  # the header and the models of both runs
    assert html.count("<img") == 3 and html.count('src="data:image/png;base64,') == 3
    assert "tensorrt GPU int8" in html and "Slowest layers" in html

    screenshot = tmp_path / "comparison.png"
    shot = _browser(f"--screenshot={screenshot}", "--window-size=1280,2000", url, cwd=tmp_path)
    assert shot.returncode == 0, shot.stderr[-2000:]
    header = screenshot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1280, 2000)
    assert screenshot.stat().st_size > 50_000  # tables, text and plots, not a blank page (a blank one is a few kB)
    # Console errors (a failed resource, a script error) are what Chromium logs about the page itself.
    assert not re.search(r"(Failed to load resource|Uncaught|net::ERR_)", shot.stderr + dom.stderr)
