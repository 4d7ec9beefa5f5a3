"""The report.html of ``python -m nero_lite flag``, opened in headless Chromium as a reader would.

Generates its own report from the tiny tree of tests/test_fit_flag.py, opens the file
straight from disk (``file://``: a self-contained page needs no server) and checks that it
loads, that every ``<img>`` decodes (``naturalWidth > 0``) and that the console holds no
SEVERE message. Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium (the
``check`` extra); skipped without them. Run by ``make check-book``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[check]')")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("chromium / chromium-driver are not installed", allow_module_level=True)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1600",
]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the tree of test_fit_flag
from test_fit_flag import fit_args, make_tree  # noqa: E402

from nero_lite import cli  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = make_tree(tmp_path_factory.mktemp("report"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        assert cli.main(fit_args(root, "--val", str(root / "id"), "--detectors", "msp,nero")) == 0
        assert cli.main(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(root / "report"), "--explain", "2"]) == 0
    return root / "report" / "report.html"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nero_lite_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_offline(report, browser):
    browser.get(report.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.execute_script("return document.querySelector('h1').textContent").startswith("nero_lite flag")
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.getAttribute('alt'), i.complete && i.naturalWidth > 0]);"
    )
    assert len(images) >= 1 + 2  # the histogram and at least one flagged image with its map
    assert all(ok for _, ok in images), images
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
