# Two commands do all the set-up: `make demo` (install + offline demo) and `make test-full`
# (install + every test, what CI runs); `make test` skips the slow end-to-end tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-full lint benchmark clean-cache

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[data,test,sweep]"
	touch $@

demo: $(VENV)/.installed
	$(PY) main.py

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

test-full: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts main.py finetune.py

benchmark: $(VENV)/.installed
	$(PY) benchmarks/demo_timing.py

clean-cache:
	rm -rf cache
