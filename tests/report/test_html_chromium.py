"""`pretrainlab report --html` in headless Chromium (Debian's `chromium`): the page loads without console errors,
has a row per run, sorts on click; a screenshot is written in the test's folder."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_html_page import ODD_NAME, make_study, parse

from pretrainlab.cli import main

# ------------------------------------------------------------------------------------------ headless Chromium


def chromium(tmp_path: Path, page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Open `page` in headless Chromium with console messages logged to stderr (`CONSOLE` lines)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium not found: the study page is tested in a headless browser; "
                    "install Debian's package with `apt-get install -y chromium`")  # fmt: skip
    offline = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
               "--no-first-run"]  # no connections on a closed network  # fmt: skip
    command = [executable, "--headless", "--no-sandbox", "--disable-gpu", *offline, "--enable-logging=stderr",
               "--v=0", f"--user-data-dir={tmp_path / 'chromium_profile'}", *options, page.as_uri()]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_page_in_headless_chromium_loads_without_console_errors_and_sorts_on_click(tmp_path: Path) -> None:
    make_study(tmp_path / "study")
    assert main(["-q", "report", str(tmp_path / "study"), "--html", "--metric", "knn_top1"]) == 0
    page = tmp_path / "study" / "report.html"

    shown = chromium(tmp_path, page, "--window-size=1280,2000", f"--screenshot={tmp_path / 'page.png'}")
    assert console_lines(shown.stderr) == []
    assert png_size(tmp_path / "page.png") == (1280, 2000)
    assert (tmp_path / "page.png").stat().st_size > 20_000  # a rendered table and figures, not a blank page

    dom = chromium(tmp_path, page, "--dump-dom")
    assert console_lines(dom.stderr) == []
    assert [row[0] for row in parse(dom.stdout).rows] == [ODD_NAME, "a_run", "c_run"]

    clicked = tmp_path / "study" / "clicked.html"  # three clicks on the sort column: ascending, descending, ascending
    clicks = ("var h = document.querySelector('th[data-key=knn_top1]'); h.click(); h.click(); h.click();"
              "document.querySelector('.gallery img').click();")  # and one on the first figure: widened
    clicked.write_text(page.read_text().replace("</body>", f"<script>{clicks}</script>\n</body>"))
    dom = chromium(tmp_path, clicked, "--dump-dom")
    assert console_lines(dom.stderr) == []
    assert [row[0] for row in parse(dom.stdout).rows] == ["c_run", "a_run", ODD_NAME]
    assert dom.stdout.count('<figure class="wide">') == 1


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The check above could pass by never seeing an error: a page with one fails it."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>notDefined();</script></body></html>")
    lines = console_lines(chromium(tmp_path, broken, "--dump-dom").stderr)
    assert len(lines) == 1 and "Uncaught ReferenceError: notDefined is not defined" in lines[0]
