"""The report.html of ``python -m nero_lite flag`` and ``evaluate``, opened in headless Chromium as a reader would.

Generates its own reports from the tiny tree of tests/test_fit_flag.py, opens each file
straight from disk (``file://``: a self-contained page needs no server) and checks that it
loads, that every ``<img>`` decodes (``naturalWidth > 0``) — the histogram, the images,
the why-flagged maps, the concept maps and the reference patches — and that the console
holds no SEVERE message. Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium
(the ``check`` extra); skipped without them. Run by ``make check-book``.
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
def reports(tmp_path_factory) -> dict[str, Path]:
    """report.html of ``flag`` (with a fitted bundle) and of ``evaluate``, on the same tree."""
    root = colour_tree(tmp_path_factory.mktemp("report"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERO_LITE_CACHE", str(root / "cache"))
        assert cli.main(fit_args(root, "--val", str(root / "id"), "--detectors", "msp,nero")) == 0
        assert cli.main(["flag", str(root / "bundle"), str(root / "ood"), "--out", str(root / "report"), "--explain", "2"]) == 0
        assert cli.main(["evaluate", "--train", str(root / "train"), "--id", str(root / "id"), "--ood", str(root / "ood"),
                         "--size", "16", "--epochs", "2", "--detectors", "msp,nero", "--explain", "2",
                         "--out", str(root / "evaluate")]) == 0
    return {"flag": root / "report" / "report.html", "evaluate": root / "evaluate" / "report.html"}


def _open(browser, page: Path) -> list[tuple[str, bool]]:
    """Load ``page``; the alt text of every image and whether it decoded, after checking the console is clean."""
    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.getAttribute('alt'), i.complete && i.naturalWidth > 0]);"
    )
    assert all(ok for _, ok in images), images
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    return images


def test_flag_report_renders_offline(browser, reports):
    images = _open(browser, reports["flag"])
    assert browser.execute_script("return document.querySelector('h1').textContent").startswith("nero_lite flag")
    alts = [alt for alt, _ in images]
    assert len(images) >= 1 + 2  # the histogram and at least one flagged image with its map
    assert "concept map" in alts and "reference patch" in alts


def test_evaluate_report_renders_offline_with_its_metrics(browser, reports):
    images = _open(browser, reports["evaluate"])
    assert browser.execute_script("return document.querySelector('h1').textContent").startswith("nero_lite evaluate")
    cells = browser.execute_script("return document.querySelectorAll('table.metrics td[data-metric]').length")
    assert cells == 2 * 3 * 2  # msp and nero; grey, yellow and all; AUROC and FPR95
    alts = [alt for alt, _ in images]
    assert alts[0] == "score histogram" and "why flagged" in alts and "reference patch" in alts
