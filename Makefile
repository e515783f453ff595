# Quick start:  make run   (install into .venv and start the app)
#               make test  (install into .venv and run the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test lint browser-deps clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) -m streamlit run app.py --server.port $(PORT)

# Real-browser tests drive Debian's Chromium (never a downloaded browser build).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' for the browser tests"; fi; }
	@command -v dciodvfy >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq dicom3tools || { apt-get update -qq && apt-get install -y -qq dicom3tools; }; } >/dev/null 2>&1; } || echo "dciodvfy missing: run 'sudo apt-get install dicom3tools' for the DICOM result checks"
	@[ -f /usr/share/mricron/templates/ch2bet.nii.gz ] || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq mricron-data || { apt-get update -qq && apt-get install -y -qq mricron-data; }; } >/dev/null 2>&1; } || echo "mricron-data missing: run 'sudo apt-get install mricron-data' for the Colin27 tests"

test: $(VENV)/.installed browser-deps
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
