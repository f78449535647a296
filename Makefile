# Two commands set everything up on a fresh clone:
#   make run   - create .venv, install opengemma, run the embedded default model on a prompt
#   make test  - create/update .venv with the dev extras, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
PROMPT ?= The three primary colors are

.PHONY: run test install install-dev lint clean chromium compiler

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/opengemma run "$(PROMPT)" --max-tokens 48

# The chat page's browser tests drive Debian's chromium through Playwright (no browser download):
# installed here when missing and this runs as root with apt-get (CI), else a hint.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make: the browser tests need chromium: sudo apt-get install -y chromium"; fi; }

# The native kernels are compiled on first use; their tests fail (saying so) without a C compiler:
# installed here when missing and this runs as root with apt-get (CI), else a hint.
compiler:
	@command -v gcc >/dev/null 2>&1 || command -v cc >/dev/null 2>&1 || [ -n "$${CC:-}" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	  else echo "make: the native kernel tests need a C compiler: sudo apt-get install -y gcc"; fi; }

test: install-dev chromium compiler
	$(PY) -m pytest -q --durations=25 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: install-dev
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV)
