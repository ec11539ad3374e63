# The two set-up commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/pytest -q

bench: install
	for script in benchmarks/*.py; do TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python $$script || exit 1; done

demo: install
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m lstm_core.demo

clean:
	rm -rf $(VENV) runs .pytest_cache
