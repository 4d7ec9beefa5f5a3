"""The built book, checked as a reader would see it: every page in headless Chromium.

Run by ``make check-book`` after ``make book`` (not by ``make unit``). Needs the Debian
``chromium`` and ``chromium-driver`` packages and Selenium (the ``check`` extra); the driver
is given explicitly, so Selenium Manager never downloads a browser. The pages are served
from ``_build/html`` by a local HTTP server: nothing leaves the machine.

Per page: no SEVERE console message, every ``<img>`` decoded (``naturalWidth > 0``), no
Python traceback, progress bar, Python warning or ``nan`` in a cell output, math typeset by the book's own MathJax where the page has
math, and every internal link pointing at an existing file and anchor. A screenshot of each
page goes to ``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import os
import http.server
import re
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the built book (override with NERO_LITE_BOOK_HTML=/path/to/_build/html)
HTML = Path(os.environ.get("NERO_LITE_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = HTML.parent / "screenshots"
SKIPPED_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static", "_modules"}

if not (HTML / "index.html").is_file():
    pytest.skip("no built book in _build/html (run `make book` first)", allow_module_level=True)

PAGES = sorted(
    p.relative_to(HTML).as_posix()
    for p in HTML.rglob("*.html")
    if not SKIPPED_DIRS.intersection(p.relative_to(HTML).parts)
)
#: What no executed cell may print: a tqdm bar, a Python warning, a "nan" where a figure does not apply ("—").
OUTPUT_PROBLEMS = {
    "progress bar": re.compile(r"\d+%\|"),
    "Python warning": re.compile(r"\b[A-Z]\w*Warning\b"),
    "nan": re.compile(r"(?<![\w.-])nan(?![\w(])", re.IGNORECASE),
}
STATS = {"pages": 0, "images": 0, "math pages": 0, "links": 0, "screenshots": 0}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # ephemeral port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(browser):
    """The shared headless Chromium (conftest.py), with this check's screenshots and summary."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield browser
    print(
        f"\ncheck-book: {STATS['pages']} pages checked, {STATS['images']} images verified, "
        f"{STATS['math pages']} pages with typeset math, {STATS['links']} internal links resolved, "
        f"{STATS['screenshots']} screenshots in {SCREENSHOTS}/"
    )


@functools.lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r'\b(?:id|name)="([^"]+)"', text))


def _wait(condition, timeout: float = 20.0, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def _check_links(driver, page: str, url: str) -> list[str]:
    problems = []
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]'), a => a.getAttribute('href'));")
    for href in hrefs:
        if not href or href.startswith(("http://", "https://", "mailto:", "javascript:", "data:")):
            continue
        target = urlsplit(urljoin(url, href))
        path = unquote(target.path).lstrip("/")
        file = HTML / path
        if path == "" or path.endswith("/"):
            file = file / "index.html"
        if not file.is_file():
            problems.append(f"broken link {href!r}")
            continue
        STATS["links"] += 1
        fragment = unquote(target.fragment)
        if fragment and file.suffix == ".html" and fragment not in _anchors(file):
            problems.append(f"missing anchor {href!r}")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page, server, browser):
    url = urljoin(server, page)
    browser.get(url)
    _wait(lambda: browser.execute_script("return document.readyState") == "complete")
    problems = []

    # images: load lazy ones too, then every <img> must have decoded pixels
    browser.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });")
    pending = "return Array.from(document.images).filter(i => !i.complete).length;"
    _wait(lambda: browser.execute_script(pending) == 0, timeout=15)
    images = browser.execute_script(
        "return Array.from(document.images, i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);"
    )
    problems += [f"image not loaded: {src}" for src, ok in images if not ok]
    STATS["images"] += sum(ok for _, ok in images)

    # math: pages with math must be typeset by MathJax (served from _static, not a CDN)
    has_math = browser.execute_script("return document.querySelectorAll('.math, .mathjax_process').length > 0;")
    if has_math:
        state = _wait(lambda: browser.execute_script(
            "const M = window.MathJax; if (!M || !M.startup || !M.startup.promise) return null;"
            "if (window.__mjState === undefined) { window.__mjState = 'pending';"
            " M.startup.promise.then(() => { window.__mjState = 'done'; }, e => { window.__mjState = 'error: ' + e; }); }"
            "return window.__mjState === 'pending' ? null : window.__mjState;"
        ), timeout=30)
        typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length;")
        errors = browser.execute_script("return document.querySelectorAll('mjx-merror').length;")
        if state != "done" or typeset == 0:
            problems.append(f"math not typeset (MathJax {state or 'absent'}, {typeset} formulas)")
        if errors:
            problems.append(f"{errors} MathJax error(s)")
        STATS["math pages"] += state == "done" and typeset > 0

    # cell outputs: no Python traceback
    tracebacks = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output, .output'))"
        ".filter(e => e.classList.contains('traceback') || e.classList.contains('error')"
        " || e.textContent.includes('Traceback (most recent call last)')).length;"
    )
    if tracebacks:
        problems.append(f"{tracebacks} cell output(s) with a traceback")
    outputs = browser.execute_script("return Array.from(document.querySelectorAll('.cell_output'), e => e.textContent);")
    for what, pattern in OUTPUT_PROBLEMS.items():
        found = [match.group(0) for text in outputs for match in [pattern.search(text)] if match]
        if found:
            problems.append(f"{len(found)} cell output(s) with a {what} (first: {found[0]!r})")

    # links relative to where the browser ended up (index.html redirects to the first chapter)
    problems += _check_links(browser, page, browser.current_url)

    # the console, last: anything SEVERE (failed request, script error) fails the page
    problems += [f"console: {entry['message']}" for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]

    shot = SCREENSHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")
    browser.save_screenshot(str(shot))
    STATS["screenshots"] += 1
    STATS["pages"] += 1
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
