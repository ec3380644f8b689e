# stockmax: every target sets up what it needs first. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stockmax-installed

.PHONY: help setup run test bench bench-live bench-search bench-max kafka-up kafka-down topics migrate clean

help:
	@echo "make setup       create .venv, install stockmax (pinned), fetch the Kafka and Flink connector jars"
	@echo "make run         the whole pipeline on a sample: local Kafka, Flink mini-cluster, embedded ClickHouse"
	@echo "make test        the test suite (end to end on the real broker, Flink and ClickHouse engine)"
	@echo "make bench       live per-tick feed, serving, throughput, latency, memory vs Flink SQL; writes bench/results.md and .png (~55 min)"
	@echo "make bench-live  a live per-tick JSON feed (event time = now) into stockmax run and the Flink SQL baselines"
	@echo "make bench-search each job's highest live rate kept up, 5 min per rate tried (bisection; ~1 h); bench/live-search.md"
	@echo "make bench-max   stockmax max latency over a month of 1-second ticks for 100 symbols (builds ~8 GB once)"
	@echo "make kafka-up    start the local Kafka broker on localhost:9092 (STOCKMAX_KAFKA_BOOTSTRAP)"
	@echo "make kafka-down  stop it"
	@echo "make topics      create the topics;  make migrate: apply the ClickHouse schema"
	@echo "make clean       remove .venv, fetched jars, the local JVM's class archive and local data"

# The venv is rebuilt only when the pins change; the jars only when their poms change (see tools/fetch-jars.sh).
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17 is required (java not found)"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing stockmax and its pinned dependencies into $(VENV) (first time: a few minutes) ..."
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	bash tools/fetch-jars.sh

run: setup
	$(VENV)/bin/stockmax demo

test: setup
	bash tools/install-browser.sh
	bash tools/run-tests.sh

bench: setup
	$(PY) bench/throughput.py

bench-live: setup
	$(PY) bench/live.py

bench-search: setup
	$(PY) bench/live.py --search 10000:80000:10000 --seconds 300 --profiles throughput --out bench/live-search.md

bench-max: setup
	$(PY) bench/max_query.py

kafka-up: setup
	$(VENV)/bin/stockmax kafka up

kafka-down: setup
	$(VENV)/bin/stockmax kafka down

topics: setup
	$(VENV)/bin/stockmax topics create

migrate: setup
	$(VENV)/bin/stockmax db migrate

clean:
	rm -rf $(VENV) .cache .stockmax .pytest_cache .hypothesis
