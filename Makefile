# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Each sets up its own virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) jobs/sweep.py --config configs/demo.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/selection.py

clean-venv:
	rm -rf $(VENV)
