# Two commands on a fresh clone: `make demo` and `make test`. Each creates the virtual
# environment and installs what is missing by itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch first, so that the project's torch range installs nothing larger.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.3,<2.15"
	$(PY) -m pip install --quiet -e ".[test,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m medseg.demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check medseg tests benchmarks

clean-venv:
	rm -rf $(VENV)
