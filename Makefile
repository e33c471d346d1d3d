# `make test` and `make book` install what they need into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The profile `make book` builds: smoke, cpu (default) or paper.
PROFILE ?= cpu
LINTED := lhlib tests benchmarks

.PHONY: install offline-packages data lint format test book book-smoke benchmark clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Offline Fashion-MNIST comes from a Debian package, and so does the headless browser that checks a
# chapter opened in JupyterLab; install them when we can: as root, or with sudo that asks no password
# (GitHub's runners). Elsewhere the tests that need them say so and skip.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
CAN_INSTALL := $(shell ([ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null) && command -v apt-get >/dev/null && echo yes)
offline-packages:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$(CAN_INSTALL)" = yes ]; then \
		($(SUDO) apt-get install -y -qq dataset-fashion-mnist || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)) >/dev/null || true; \
	fi
	@if ! command -v chromium >/dev/null && [ "$(CAN_INSTALL)" = yes ]; then \
		($(SUDO) apt-get install -y -qq chromium || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)) >/dev/null 2>&1 || true; \
	fi

data: $(STAMP) offline-packages
	$(PY) -m lhlib.engine.data fetch mnist fashion_mnist digits

# ruff is pinned in requirements.txt; its configuration is in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m ruff check --select F notebooks  # undefined names and unused imports in the chapters

format: $(STAMP)
	$(PY) -m ruff check --fix $(LINTED)
	$(PY) -m ruff format $(LINTED)

# Tests that need a dataset this machine cannot load are skipped, with the reason shown.
test: lint offline-packages
	$(PY) -m pytest -q

book: data
	$(PY) -m lhlib.build.book build --profile $(PROFILE)

book-smoke: data
	$(PY) -m lhlib.build.book build --profile smoke

benchmark: $(STAMP)
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf _build results
