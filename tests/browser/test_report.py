"""The report.html of ``python -m nero_lite flag``, opened in headless Chromium as a reader would.

Generates its own report from the tiny tree of tests/test_fit_flag.py, opens the file
straight from disk (``file://``: a self-contained page needs no server) and checks that it
loads, that every ``<img>`` decodes (``naturalWidth > 0``) and that the console holds no
SEVERE message. Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium (the
``check`` extra); skipped without them. Run by ``make check-book``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the tree of test_fit_flag
from image_folders import colour_tree  # noqa: E402
from test_fit_flag import fit_args  # noqa: E402

from nero_lite import cli  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = colour_tree(tmp_path_factory.mktemp("report"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        assert cli.main(fit_args(root, "--val", str(root / "id"), "--detectors", "msp,nero")) == 0
        assert cli.main(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(root / "report"), "--explain", "2"]) == 0
    return root / "report" / "report.html"


def test_report_renders_offline(browser, report):
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
