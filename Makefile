# The README's two commands. Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# gpar[s3] pins the DuckDB its httpfs wheel is built for: its tests run again in a venv of its own
S3_VENV ?= .venv-s3
S3_PY := $(S3_VENV)/bin/python

.PHONY: demo test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(S3_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_PY) -m pip install --quiet --upgrade pip
	$(S3_PY) -m pip install --quiet -e '.[test,s3]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m forecasting_demo --out demo-output

test: $(VENV)/.installed $(S3_VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not httpfs"
	$(S3_PY) -m pytest -m "s3 or httpfs"

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) bench/run.py $(BENCH)
