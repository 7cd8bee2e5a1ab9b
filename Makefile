# Closeloop: `make install`, `make test`, `make dev` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages test dev unit bench compose-test compose-fault clean

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

# docker-compose.yml for real (needs a Docker engine; not part of `make test`): the gateway,
# the README's first complaint, 2 intake replicas, a replica killed, a complaint's case read on
# investigation, 2 investigation replicas, a sale's return visit listed on aftercare; then a few
# integration tests on containers started by testcontainers (see README: "Set up").
COMPOSE_TEST_INFRA_TESTS ?= tests/integration/test_outbox_relay.py tests/e2e/test_intake_http.py
compose-test: install
	$(BIN)/python scripts/compose_test.py
	# Without the reaper's image on this machine, run without it (the tests stop their
	# containers themselves) rather than fail on a pull from a registry out of reach.
	env -u AMQP_URI -u DATABASE_URL CLOSELOOP_TEST_INFRA=containers \
		TESTCONTAINERS_RYUK_DISABLED=$${TESTCONTAINERS_RYUK_DISABLED:-$$(docker image inspect testcontainers/ryuk:0.8.1 >/dev/null 2>&1 && echo false || echo true)} \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(COMPOSE_TEST_INFRA_TESTS)

# Refused posts while intake is killed and restarted, with 1 and with 2 replicas.
compose-fault: install
	$(BIN)/python scripts/compose_test.py --fault

dev: install
	exec $(BIN)/closeloop dev $(DEV_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
