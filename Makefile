# Two entry points: `make demo` (main job) and `make test` (test suite). Both create .venv and install.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml requirements/local.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/local.txt
	$(BIN)/python -m pip install --quiet -c requirements/local.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/sgm demo --out $(OUT)

test: install
	MPLBACKEND=Agg $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/warp_throughput.py

clean:
	rm -rf $(VENV) runs
