# kdet developer entry points. Every target installs what it needs by itself.
#   make demo   - train/evaluate/export the demo (or the best the package can do)
#   make test   - the default test suite (< 20 min on 2 CPU cores)
#   make test-slow - the long checks (marker `slow`)
# KDET_TF=cpu (default) installs tensorflow-cpu; KDET_TF=gpu installs the CUDA build.

PYTHON ?= python3
VENV ?= .venv
KDET_TF ?= cpu
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: demo test test-slow venv venv-test ops clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e '.[$(KDET_TF)]'
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q -e '.[$(KDET_TF),test]'
	touch $@

venv: $(VENV)/.stamp-base
venv-test: $(VENV)/.stamp-test

demo: $(VENV)/.stamp-base
	$(VENV)/bin/kdet demo --out demo_output

test: $(VENV)/.stamp-test
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: $(VENV)/.stamp-test
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

ops: $(VENV)/.stamp-base
	$(VENV)/bin/kdet ops build

clean:
	rm -rf $(VENV) build *.egg-info demo_output
