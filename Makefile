# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Each sets up .venv on first use, from requirements.lock: the exact versions CI tested.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := requirements.lock
PIP    := pip==26.3

# `make lock` writes requirements.lock from pyproject.toml with uv (from PyPI), keeping the
# versions already locked where they still fit; `make lock-upgrade` moves every package to
# the newest release pyproject.toml allows, under the constraints in .ci/lock-pins.txt
# (torch / torchvision held at the CUDA builds this project's machines carry).
LOCK_PINS  := .ci/lock-pins.txt
UV         := uv==0.13.9
LOCK_FLAGS ?=

# The canaries run these against other releases than the lock's.
CANARY_TESTS := tests/pruning tests/pipeline
# A test that fails by design outside the tested range (the canary prints the versions instead).
CANARY_SKIP  := --deselect tests/pruning/test_seams.py::test_the_tested_release_does_not_warn
LATEST       := .venv-latest
TRANSFORMERS ?= 5.17.0

.PHONY: demo test bench lock lock-upgrade test-latest test-transformers clean-venv

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(PIP)"
	$(PY) -m pip install --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) jobs/sweep.py --config configs/demo.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/selection.py

lock:
	test -x .venv-lock/bin/uv || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet "$(UV)"; }
	.venv-lock/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.10 \
	    --generate-hashes --constraint $(LOCK_PINS) $(LOCK_FLAGS) \
	    --custom-compile-command "make lock" --output-file $(LOCK)

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

# The canary: a second venv with the newest release of every dependency (pyproject.toml's
# upper bounds lifted), running the engine and pipeline tests.
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/unbounded_requirements.py > $(LATEST)/requirements.txt
	$(LATEST)/bin/python -m pip install -r $(LATEST)/requirements.txt
	$(LATEST)/bin/python -m pip install --no-deps --no-build-isolation -e .
	$(LATEST)/bin/python .ci/versions.py
	$(LATEST)/bin/python -m pytest -q $(CANARY_TESTS) $(CANARY_SKIP)

# `make test-transformers TRANSFORMERS=5.17.0`: the same tests under another transformers
# release (and the huggingface-hub / tokenizers it asks for), layered over .venv.
test-transformers: $(VENV)/.installed
	rm -rf .venv-tf && $(PY) -m venv .venv-tf
	$(PY) .ci/layer_venv.py .venv-tf
	.venv-tf/bin/python -m pip install --quiet "transformers==$(TRANSFORMERS)"
	.venv-tf/bin/python .ci/versions.py
	.venv-tf/bin/python -m pytest -q $(CANARY_TESTS) $(CANARY_SKIP)

clean-venv:
	rm -rf $(VENV) $(LATEST) .venv-tf .venv-lock
