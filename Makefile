# The README's two commands: `make demo` and `make test`. Both create the virtual
# environment on first use and install torch only if it is missing from it.
PYTHON ?= python3
VENV   ?= .venv
# torch requirement installed when .venv has none. On a GPU machine, install your own
# CUDA build into .venv first (make then leaves it alone); for a CPU-only build from
# pytorch.org use: make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN    := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 14)))' || \
	  { echo "seqbench needs Python 3.10 to 3.13; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
	         "Run e.g. make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Then the example plugin (examples/plugin), which tests/test_plugins.py runs. It is built
# as seqbench is, by hatchling from pip's own index or cache: a fresh venv has no build
# backend for --no-build-isolation (hatchling never, setuptools 65 without `wheel`).
# --no-deps: what it needs is installed by the line before.
$(VENV)/.installed: $(BIN)/python pyproject.toml examples/plugin/pyproject.toml
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m pip install --no-deps -e examples/plugin
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python -m seqbench sweep

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check seqbench tests hydra_plugins examples

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
