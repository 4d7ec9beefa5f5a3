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

.PHONY: setup versions test unit notebooks book mathjax browser check-book clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[book,test]'
	@touch $(STAMP)

setup: $(STAMP)

versions: setup
	@$(PY) -c "import nero_lite; print('stack:', ', '.join(f'{k} {v}' for k, v in nero_lite.versions().items()))"

unit: setup
	$(PY) -m pytest tests -p no:cacheprovider --ignore=tests/browser

notebooks: setup
	$(PY) -m pytest --nbmake book --nbmake-timeout=1200 --durations=0 -p no:cacheprovider

test: versions unit notebooks

$(MATHJAX): $(STAMP)
	@rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax
	@es5=$$($(PY) -c "import mathjax, pathlib; print(pathlib.Path(mathjax.__file__).parent / 'static/mathjax/es5')") \
	  && cd $$es5 && cp -r tex-mml-chtml.js input output ui a11y adaptors $(CURDIR)/book/_static/mathjax/
	@echo "mathjax: copied into book/_static/mathjax"

mathjax: $(MATHJAX)

book: setup $(MATHJAX)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
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
