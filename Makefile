# The README's two commands: `make book` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup versions test unit notebooks book clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[book,test]'
	@touch $(STAMP)

setup: $(STAMP)

versions: setup
	@$(PY) -c "import nero_lite; print('stack:', ', '.join(f'{k} {v}' for k, v in nero_lite.versions().items()))"

unit: setup
	$(PY) -m pytest tests -p no:cacheprovider

notebooks: setup
	$(PY) -m pytest --nbmake book --nbmake-timeout=1200 --durations=0 -p no:cacheprovider

test: versions unit notebooks

book: setup
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

clean:
	rm -rf _build
