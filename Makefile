# Closeloop: `make install`, `make test`, `make dev` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages test dev unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# docker-compose (validating the compose file) and wrk (benchmarks), from Debian.
system-packages:
	bash scripts/install-system-packages.sh

# The whole suite against a real RabbitMQ and PostgreSQL (see README: "Tests").
test: install system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit tests only: no infrastructure needed.
unit: install system-packages
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Benchmarks: prints figures and writes bench/results/ (see README: "Benchmarks").
bench: install system-packages
	$(BIN)/python -m bench.run $(BENCH_ARGS)

dev: install
	exec $(BIN)/closeloop dev

clean:
	rm -rf $(VENV) *.egg-info
