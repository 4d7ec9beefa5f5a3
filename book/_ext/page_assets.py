"""A small Sphinx extension for the book's pages (loaded from ``_config.yml``).

* Every page gets each inline script once: the ``thebe`` configuration script
  (``const THEBE_JS_URL = ...``) is otherwise registered twice by jupyter-book 1.x's build
  and a browser rejects the second ``const`` with a SyntaxError.
* A reader's first visit starts in light mode: sphinx-book-theme leaves the colour mode
  empty until a reader picks one, and pydata-sphinx-theme then logs a console error.
"""

from __future__ import annotations

_DEFAULT_MODE = 'if (!document.documentElement.dataset.mode) { document.documentElement.dataset.mode = "light"; }'


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items()))
        key = (getattr(script, "filename", None) or "", attributes)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.add_js_file(None, body=_DEFAULT_MODE, priority=100)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
