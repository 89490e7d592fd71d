# Set-up and entry points. `make demo` runs the main job, `make test` the whole test suite;
# both create a local virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of PyTorch; set TORCH to another requirement (e.g. a CUDA build) if you need one.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test lint graphviz clean

$(BIN)/ppdgm: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(BIN)/ppdgm

install: $(BIN)/ppdgm graphviz

graphviz:
	@bash scripts/ensure-graphviz.sh

demo: install
	$(BIN)/ppdgm demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info ppdgm-demo
