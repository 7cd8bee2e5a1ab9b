# Closeloop: `make install`, `make test`, `make dev` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test dev unit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# The whole suite against a real RabbitMQ and PostgreSQL (see README: "Tests").
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit tests only: no infrastructure needed.
unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

dev: install
	exec $(BIN)/closeloop dev

clean:
	rm -rf $(VENV) *.egg-info
