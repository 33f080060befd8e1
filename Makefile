# Two commands matter: `make run` (set up, then run the pipeline on the bundled
# taxi data) and `make test` (set up, then run every test). Setup is idempotent:
# it creates .venv once, reinstalls only when requirements change, and installs
# the one system library it needs.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/tfx-edge
REQ_HASH := $(shell cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Apache Airflow (the fleet's DAGs) lives in its own venv: its pins do not resolve with the TFX stack.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-$(shell cat requirements-airflow.txt requirements-airflow.lock | sha256sum | cut -c1-16)
# MkDocs (the documentation site) lives in its own venv too: see requirements-docs.txt for why.
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed-$(shell cat requirements-docs.txt requirements-docs.lock | sha256sum | cut -c1-16)
DOCS_PORT ?= 8000
export PYTHONDONTWRITEBYTECODE := 1
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; the pinned 1.6 is what this site uses.
export NO_MKDOCS_2_WARNING := 1

# Extra arguments for run/bench/infer-schema, e.g. make run ARGS="--set training.train_steps=500"
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test test-fast chaos fuzz bench bench-data bench-formats profile bench-edge bench-serving bench-strategies bench-batch bench-tasks bench-models \
	infer-schema init validate score fleet-demo fleet-airflow bench-fleet airflow-setup \
	clean help system-deps browser-deps monitoring-deps serve lineage runs report notebooks strip-notebooks \
	docs docs-setup docs-build docs-reference bench-monitoring

help:
	@echo "make run        set up, then run the pipeline on the bundled taxi data (ARGS=... for options)"
	@echo "make test       set up, then run all tests (unit + integration)"
	@echo "make test-fast  unit tests only (no pipeline runs)"
	@echo "make bench      stock TFX taxi example vs this pipeline, side by side"
	@echo "make profile    one fresh run (ARGS=--cached: and an unchanged one), per component: start-up, Beam, tracing, fit"
	@echo "make bench-data StatisticsGen + Transform at 1x/10x/50x data, Beam in_memory vs multi_processing (ARGS='--pipelines stages,whole': the whole run too)"
	@echo "make bench-formats ExampleGen + StatisticsGen per format (TFRecord, Parquet, CSV) vs its read limit, 1.5 M rows"
	@echo "make bench-edge edge int8/float TFLite vs SavedModel: size, AUC, latency per raw example (after make run)"
	@echo "make serve      local TF Serving-compatible server: gRPC 8500, REST 8501, metrics (ARGS='--set serving.port=N')"
	@echo "make bench-serving  gRPC/REST latency, QPS with batching on/off, hot swap under load, vs in-process"
	@echo "make score     ARGS='--input DATA --out DIR [--model stable --model canary] [--format csv]' batch scoring"
	@echo "make bench-batch  batch scoring at 1x/10x/100x: RunInference in_memory / multi_processing vs loops"
	@echo "make bench-strategies  default vs mirrored (2 replicas) vs parameter server (1 ps + 2 workers)"
	@echo "make bench-tasks  binary/multiclass/regression: SavedModel vs int8 quality, size, edge latency"
	@echo "make bench-models dnn/linear/gbdt/auto per dataset: metric, training cost, size, gRPC latency, int8"
	@echo "make init       your own data (TFRecord, Parquet, CSV) to config.yaml + schema.pbtxt (ARGS='--data-root DIR --label COL --out DIR')"
	@echo "make infer-schema ARGS='--data-root DIR --out FILE'"
	@echo "make lineage    what made the newest pushed model (ARGS='--version V | --run ID | --json')"
	@echo "make runs       every recorded run with status, duration and metrics"
	@echo "make report     write the newest run's HTML report (ARGS='--run ID')"
	@echo "make notebooks  open notebooks/ in Jupyter Lab, on the outputs of make run"
	@echo "make validate   ARGS='validate --data-root DIR' (or skew, drift, make-spans; see README)"
	@echo "make fleet-demo lay out demo tenants (spans of the bundled data) in outputs/fleet-demo, run a fleet cycle"
	@echo "make fleet-airflow  one Airflow DAG per demo tenant model in outputs/fleet-demo/dags, listed by Airflow"
	@echo "make bench-fleet  fleet cycle: full, no-change, per-tenant overhead vs one pipeline run (ARGS='--tenants 20')"
	@echo "make bench-monitoring  monitoring job per million logged requests, drift onset to retrain, logging on/off"
	@echo "make docs       serve the documentation site on http://127.0.0.1:8000 (DOCS_PORT=N for another port)"
	@echo "make docs-build build the site into site/ with mkdocs build --strict (make test does it too)"
	@echo "make docs-reference  regenerate docs/reference/configuration.md and cli.md from the code"
	@echo "make chaos      fault injection (kill -9, full disks, bad versions, two controllers...) + fuzzing: one table"
	@echo "make fuzz       thousands of fuzzed REST/gRPC requests against a real server and model"
	@echo "make clean      delete outputs/ (models, MLMD, logs)"

setup: system-deps $(STAMP)

# Python 3.10: pyenv's 3.10.13 first (every machine here has it), else python3.10 on PATH.
$(STAMP): requirements.txt requirements.lock pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  base=""; \
	  if command -v pyenv >/dev/null 2>&1 && [ -x "$$(pyenv root)/versions/3.10.13/bin/python3.10" ]; then \
	    base="$$(pyenv root)/versions/3.10.13/bin/python3.10"; \
	  elif command -v python3.10 >/dev/null 2>&1; then base="$$(command -v python3.10)"; fi; \
	  if [ -z "$$base" ]; then \
	    echo "setup: Python 3.10 not found. Install it (pyenv install 3.10.13) and re-run make." >&2; exit 1; fi; \
	  echo "setup: creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	fi
	@echo "setup: installing pinned requirements into $(VENV) (a few minutes the first time)"
	@$(PY) -m pip install --quiet --upgrade pip==26.3
	@$(PY) -m pip install --quiet -r requirements.txt -c requirements.lock
	@# The project itself, editable: `tfx-edge` and `python -m <package>` run this checkout.
	@$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . > $(VENV)/install-project.log 2>&1 \
	  || { cat $(VENV)/install-project.log; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "setup: done"

# Same Python as .venv (its base interpreter); used by `make test` (DagBag + `airflow dags test`) and fleet-airflow.
airflow-setup: setup $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements-airflow.txt requirements-airflow.lock
	@set -e; \
	if [ ! -x $(AIRFLOW_VENV)/bin/python ]; then \
	  echo "setup: creating $(AIRFLOW_VENV) (Apache Airflow for the fleet's DAGs)"; \
	  "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(AIRFLOW_VENV); \
	fi
	@echo "setup: installing pinned Apache Airflow into $(AIRFLOW_VENV)"
	@$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	@$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements-airflow.txt -c requirements-airflow.lock
	@rm -f $(AIRFLOW_VENV)/.installed-*
	@touch $(AIRFLOW_STAMP)

# Same Python as .venv; used by `make test` (tests/test_docs.py builds the site with --strict) and `make docs`.
docs-setup: setup $(DOCS_STAMP)

$(DOCS_STAMP): requirements-docs.txt requirements-docs.lock
	@set -e; \
	if [ ! -x $(DOCS_VENV)/bin/python ]; then \
	  echo "setup: creating $(DOCS_VENV) (MkDocs for the documentation site)"; \
	  "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(DOCS_VENV); \
	fi
	@echo "setup: installing pinned MkDocs into $(DOCS_VENV)"
	@$(DOCS_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	@$(DOCS_VENV)/bin/python -m pip install --quiet -r requirements-docs.txt -c requirements-docs.lock
	@rm -f $(DOCS_VENV)/.installed-*
	@touch $(DOCS_STAMP)

# The documentation site: docs/ + mkdocs.yml. The reference pages are generated from the code
# (tools/gen_reference.py); tests/test_docs.py fails when they are stale or when the strict build warns.
docs: docs-setup
	$(DOCS_VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-build: docs-setup
	$(PY) tools/gen_reference.py --check
	$(DOCS_VENV)/bin/mkdocs build --strict

docs-reference: setup
	$(PY) tools/gen_reference.py

# tflite-support loads libusb-1.0 at import time.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  echo "setup: installing system library libusb-1.0-0 (needed by tflite-support)"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libusb-1.0-0 ) >/dev/null 2>&1 || { \
	    echo "setup: could not install libusb-1.0-0. Install it yourself (apt-get install libusb-1.0-0," \
	         "or brew install libusb) and re-run make." >&2; exit 1; }; \
	fi

# The report test opens the HTML report in a real headless browser.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "setup: installing chromium (headless check of the HTML run report)"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
	    >/dev/null 2>&1 || { echo "setup: could not install chromium (apt-get install chromium)." >&2; exit 1; }; \
	fi

# The alert tests run a real Prometheus, promtool and Alertmanager (Debian's packages; the service they install is
# not started: the tests start their own on loopback ports).
monitoring-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then \
	  echo "setup: installing prometheus and prometheus-alertmanager (alert rules and their end-to-end test)"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      --no-install-recommends prometheus prometheus-alertmanager ) >/dev/null 2>&1 || { \
	    echo "setup: could not install prometheus and prometheus-alertmanager (apt-get install prometheus" \
	         "prometheus-alertmanager)." >&2; exit 1; }; \
	fi

run: setup
	$(CLI) pipeline run $(ARGS)

test: setup airflow-setup docs-setup browser-deps monitoring-deps
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Every fault-injection case (make test runs the fast ones) and a long fuzzing run; the table is printed at the end.
# Mounting the small disks needs root.
chaos: setup
	CHAOS_ALL=1 FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),2000) FUZZ_RANDOM=1 $(PY) -m pytest tests/chaos \
	  tests/test_serving_availability.py tests/test_serving_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

fuzz: setup
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),5000) FUZZ_RANDOM=1 $(PY) -m pytest tests/test_serving_fuzz.py $(PYTEST_ARGS)

test-fast: setup docs-setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.stock_comparison $(ARGS)

profile: setup
	$(PY) -m bench.profile $(ARGS)

bench-data: setup
	$(PY) -m bench.data_stages $(ARGS)

bench-formats: setup
	$(PY) -m bench.formats $(ARGS)

bench-edge: setup
	$(PY) -m bench.edge_latency $(ARGS)
bench-strategies: setup
	$(PY) -m bench.strategies $(ARGS)

bench-tasks: setup
	$(PY) -m bench.tasks $(ARGS)

bench-models: setup
	$(PY) -m bench.models $(ARGS)

infer-schema: setup
	$(CLI) schema infer $(ARGS)

init: setup
	$(CLI) schema init $(ARGS)

lineage: setup
	@$(CLI) reports lineage $(ARGS)

runs: setup
	@$(CLI) reports runs $(ARGS)

report: setup
	@$(CLI) reports html $(ARGS)

notebooks: setup
	cd notebooks && ../$(VENV)/bin/jupyter lab --no-browser --ip 127.0.0.1

# Notebooks are committed without outputs (a test checks it).
strip-notebooks: setup
	$(PY) notebooks/strip_outputs.py
validate: setup
	$(CLI) validation $(ARGS)

clean:
	rm -rf outputs

# Online serving: the local TF Serving-compatible gRPC + REST server, and its benchmark.
serve: setup
	$(CLI) serving serve $(ARGS)

bench-serving: setup
	$(PY) -m bench.serving_latency $(ARGS)

# Batch scoring: a file scored offline with pushed models on Beam RunInference, and its benchmark.
score: setup
	$(CLI) serving score $(ARGS)

bench-batch: setup
	$(PY) -m bench.batch_scoring $(ARGS)

# A fleet: many tenants' models from one fleet file (fleet/, README "A fleet of tenants").
fleet-demo: setup
	$(CLI) fleet demo --out outputs/fleet-demo $(ARGS)
	$(CLI) fleet status --fleet outputs/fleet-demo/fleet.yaml

# One Airflow DAG per tenant model of the demo fleet, loaded by Airflow's DagBag (make fleet-demo first).
fleet-airflow: airflow-setup
	$(CLI) fleet airflow --fleet outputs/fleet-demo/fleet.yaml --out outputs/fleet-demo/dags $(ARGS)
	AIRFLOW_HOME=$(CURDIR)/outputs/fleet-demo/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/outputs/fleet-demo/dags \
	  bash -c '$(AIRFLOW_VENV)/bin/airflow db migrate >/dev/null && $(AIRFLOW_VENV)/bin/airflow dags list'

bench-fleet: setup
	$(PY) -m bench.fleet $(ARGS)

bench-monitoring: setup monitoring-deps
	$(PY) -m bench.monitoring $(ARGS)
