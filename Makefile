# bcd — the two set-up commands are `make test` and `make demo` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_PACKAGES := gcc libc6-dev python3-dev libssl-dev sqlite3 systemd mosquitto prometheus prometheus-alertmanager monitoring-plugins-basic etcd-server iproute2 chromium chromium-driver fonts-dejavu-core postgresql
PYTEST_ARGS ?=

.PHONY: install deps test lint unit demo bench soak clean

# Debian packages the test suite talks to for real (broker, promtool, Nagios plugins, systemd), and what builds
# bcd/journal/_chain.c (gcc, the Python and OpenSSL headers; without them bcd hashes in Python).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# the Debian packages start their own daemons; the tests start their own on free ports
	@-systemctl disable --now mosquitto prometheus prometheus-alertmanager etcd >/dev/null 2>&1 || true

$(STAMP): pyproject.toml setup.py bcd/journal/_chain.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check bcd tests bench
	$(BIN)/mypy bcd

test: deps install lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

demo: install
	$(BIN)/bcd demo

bench: install
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_plans.py
	$(BIN)/python bench/bench_cluster.py  # etcd's load from 3 instances x 500 services; needs etcd (make deps)
	$(BIN)/python bench/bench_journal.py
	$(BIN)/python bench/bench_detection.py
	$(BIN)/python bench/bench_report.py  # a year of a 200-service journal: about a minute to write, then the report

# chaos soak (bench/soak.py): SOAK_SECONDS=3600 make soak for an hour; needs mosquitto (make deps)
SOAK_SECONDS ?= 600
soak: install
	$(BIN)/python bench/soak.py $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache build bcd/journal/*.so
