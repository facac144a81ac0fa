# sparseseg: `make demo` runs the main job on a synthetic example, `make lint` checks the code with ruff, `make test`
# runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of this torch lies on disk on our machines; a newer spec would pull GBs of CUDA packages.
TORCH_PIN := torch==2.13.0

.PHONY: install demo lint test bench clean

install: $(BIN)/sparseseg

$(BIN)/sparseseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)" || echo "$(TORCH_PIN) not available here: using pyproject's torch range"
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

demo: install
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/compare_rf.py

clean:
	rm -rf $(VENV) demo_out bench_out
