# The README's two commands: `make book` and `make test`. Both set up .venv first.
# `make check-book` then opens every page of the built book in headless Chromium.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHECK_STAMP := $(VENV)/.installed-check
# MathJax is served from the book itself (no CDN at read time): its files come from the
# django-static-mathjax wheel on PyPI (MathJax 3.2.2, plain JavaScript; Django is not needed).
MATHJAX := book/_static/mathjax/tex-mml-chtml.js
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Chapters run with NERO_LITE_PROGRESS=0: no progress bar lands in an executed chapter (nero_lite.progress).
# CI executes every chapter once: with EXECUTED=1, `make notebooks` writes nbmake's outputs
# into book/*.ipynb (--overwrite) and `make book` renders those outputs instead of executing
# the chapters again (execute_notebooks "off" in a copy of _config.yml). Without it, `make book`
# executes every chapter itself, as on a fresh clone.
EXECUTED ?=
# beside _config.yml: the book resolves local_extensions relative to its configuration file
EXECUTED_CONFIG := _config.executed.yml

.PHONY: setup versions test unit notebooks book mathjax browser check-book clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[book,test,scale]'
	@touch $(STAMP)

setup: $(STAMP)

versions: setup
	@$(PY) -c "import nero_lite; print('stack:', ', '.join(f'{k} {v}' for k, v in nero_lite.versions().items()))"

# Two workers (pytest-xdist) of one thread each: the trainings of tests/test_end_to_end.py run two at
# a time, which on two cores finishes sooner than one at a time on two threads.
unit: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n 2 --dist worksteal -p no:cacheprovider --ignore=tests/browser --durations=15

notebooks: setup
	NERO_LITE_PROGRESS=0 $(PY) -m pytest --nbmake book --nbmake-timeout=1200 --durations=0 -p no:cacheprovider $(if $(EXECUTED),--overwrite)

test: versions unit notebooks

$(MATHJAX): $(STAMP)
	@rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax
	@es5=$$($(PY) -c "import mathjax, pathlib; print(pathlib.Path(mathjax.__file__).parent / 'static/mathjax/es5')") \
	  && cd $$es5 && cp -r tex-mml-chtml.js input output ui a11y adaptors $(CURDIR)/book/_static/mathjax/
	@echo "mathjax: copied into book/_static/mathjax"

mathjax: $(MATHJAX)

book: setup $(MATHJAX)
ifeq ($(EXECUTED),)
	NERO_LITE_PROGRESS=0 $(VENV)/bin/jupyter-book build . -W -n --keep-going
else
	@$(PY) -c "import json, pathlib, sys; \
	unrun = [str(p) for p in sorted(pathlib.Path('book').glob('*.ipynb')) \
	         if not any(c.get('outputs') for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code')]; \
	sys.exit(f'book: EXECUTED=1 but never executed (run make notebooks EXECUTED=1 first): {unrun}' if unrun else 0)"
	@sed 's/^\(  execute_notebooks:\).*/\1 "off"/' _config.yml > $(EXECUTED_CONFIG)
	@grep -q 'execute_notebooks: "off"' $(EXECUTED_CONFIG) || { echo "book: could not switch execution off in $(EXECUTED_CONFIG)"; exit 1; }
	NERO_LITE_PROGRESS=0 $(VENV)/bin/jupyter-book build . --config $(EXECUTED_CONFIG) -W -n --keep-going
endif
	@echo "book: $(CURDIR)/_build/html/index.html"

# The reader's check: Debian's chromium + chromium-driver (never a downloaded browser) and Selenium.
$(CHECK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[check]'
	@touch $(CHECK_STAMP)

browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

check-book: $(CHECK_STAMP) browser
	@test -f _build/html/index.html || { echo "check-book: no built book, run make book first"; exit 1; }
	$(PY) -m pytest tests/browser -p no:cacheprovider -q -s

clean:
	rm -rf _build
